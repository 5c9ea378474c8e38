#!/usr/bin/env bash
# One-time superuser provisioning of the gateway's database roles: the postgres image runs it
# once, on an empty data directory, before the server accepts TCP connections. Afterwards no
# component connects as the superuser:
#
#   role                 login  used by        may
#   gateway_migrator     yes    migrate        own the database and schema "public" (the chain)
#   gateway_authz        yes    authz          what gateway_audit_writer may (insert audit rows)
#   gateway_backend      yes    backend        connect (its /health runs SELECT 1)
#
# The audit groups (NOLOGIN) are created here too, so that the logins can join them and so that
# the BYPASSRLS one, which only a superuser may create, exists before the migrator runs the
# chain (migration 0004 creates each of them only if it is missing). gateway_migrator joins
# gateway_audit_maintainer because the chain hands its SECURITY DEFINER functions to it.
#
# Environment: POSTGRES_USER, POSTGRES_DB (the image's), MIGRATOR_DB_PASSWORD,
# AUTHZ_DB_PASSWORD, BACKEND_DB_PASSWORD. Re-running it is harmless (it sets the passwords).
set -euo pipefail
for name in MIGRATOR_DB_PASSWORD AUTHZ_DB_PASSWORD BACKEND_DB_PASSWORD; do
	if [[ -z ${!name:-} ]]; then
		echo "10-gateway-roles.sh: $name is not set (see compose/.env.example)" >&2
		exit 1
	fi
done

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v database="$POSTGRES_DB" \
	-v migrator_password="$MIGRATOR_DB_PASSWORD" \
	-v authz_password="$AUTHZ_DB_PASSWORD" \
	-v backend_password="$BACKEND_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I NOLOGIN %s', name, attributes)
FROM (VALUES ('gateway_audit_admin', ''), ('gateway_audit_user', ''),
             ('gateway_audit_customer_admin', ''), ('gateway_audit_writer', ''),
             ('gateway_audit_maintainer', 'BYPASSRLS'),
             ('gateway_migrator', ''), ('gateway_authz', ''), ('gateway_backend', ''))
     AS wanted(name, attributes)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = wanted.name)
\gexec

ALTER ROLE gateway_migrator LOGIN PASSWORD :'migrator_password';
ALTER ROLE gateway_authz LOGIN PASSWORD :'authz_password';
ALTER ROLE gateway_backend LOGIN PASSWORD :'backend_password';
GRANT gateway_audit_writer TO gateway_authz;
GRANT gateway_audit_maintainer TO gateway_migrator;

-- the migrator owns what the chain changes; nobody else may connect without a grant
ALTER DATABASE :"database" OWNER TO gateway_migrator;
ALTER SCHEMA public OWNER TO gateway_migrator;
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO gateway_authz, gateway_backend;
-- a new owner of a function needs CREATE on its schema (the chain's ALTER FUNCTION ... OWNER)
GRANT CREATE ON SCHEMA public TO gateway_audit_maintainer;
-- 0004 declares the settings the row-level policies read with ALTER DATABASE ... SET, which
-- PostgreSQL lets only a superuser or a holder of SET on the parameter do
GRANT SET ON PARAMETER app.user_id, app.customer_id TO gateway_migrator;
SQL
