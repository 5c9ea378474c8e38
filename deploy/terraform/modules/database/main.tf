# Cloud SQL for PostgreSQL 15 on a private IP only, with pg_cron (audit retention), backups and
# point-in-time recovery, TLS required. Credentials live in Secret Manager: a generated password
# per login (devstack/provision.py's Logins: migrator, shipper, retention, reader, backend), as
# a postgresql:// URL for the workload that logs in and as the bare password for provisioning.
# Terraform creates one Cloud SQL user, the provisioner (cloudsqlsuperuser, Cloud SQL's nearest
# thing to a superuser); the provision job (python3 -m devstack provision) creates the group
# roles and the logins with these passwords (authz_service/audit/README.md, "Roles").

variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "region" {
  description = "Region of the instance."
  type        = string
}

variable "network_id" {
  description = "VPC with private services access."
  type        = string
}

variable "private_services_connection" {
  description = "The peering the private IP needs (an explicit dependency)."
  type        = string
}

variable "tier" {
  description = "Machine tier."
  type        = string
  default     = "db-custom-2-7680"
}

variable "high_availability" {
  description = "REGIONAL (a standby in another zone) instead of ZONAL."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse to destroy the instance."
  type        = bool
  default     = true
}

variable "logins" {
  description = "Duty -> database login (devstack.provision.Logins); each gets a generated password."
  type        = map(string)
  default = {
    migrator  = "gateway_migrator"
    shipper   = "gateway_shipper"
    retention = "gateway_retention"
    reader    = "gateway_reader"
    backend   = "gateway_backend"
  }
}

variable "provisioner" {
  description = "The Cloud SQL user that provisions (cloudsqlsuperuser); only the provision job uses it."
  type        = string
  default     = "gateway_provisioner"
}

locals {
  database = "gateway"
}

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_79:PostgreSQL 15 is the version the project supports and tests (pg_cron, migrations)
  #checkov:skip=CKV_GCP_6:TLS is required by ssl_mode ENCRYPTED_ONLY; client certificates are not used (private IP, passwords)
  name                = "${var.name}-pg"
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.deletion_protection
  depends_on          = [var.private_services_connection]

  settings {
    tier              = var.tier
    availability_type = var.high_availability ? "REGIONAL" : "ZONAL"
    disk_autoresize   = true

    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network_id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "20:30"
    }

    # pg_cron runs audit retention; the log flags make connections, locks and DDL visible
    database_flags {
      name  = "cloudsql.enable_pg_cron"
      value = "on"
    }
    database_flags {
      name  = "cron.database_name"
      value = local.database
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }

    insights_config {
      query_insights_enabled = true
    }
  }
}

resource "google_sql_database" "gateway" {
  name     = local.database
  instance = google_sql_database_instance.this.name
}

resource "random_password" "login" {
  for_each = merge(var.logins, { provisioner = var.provisioner })
  length   = 40
  special  = false
}

# The one Cloud SQL user: a cloudsqlsuperuser member, for the provision job alone. Every login
# the gateway uses is created by that job (the same code as `make up` and compose).
resource "google_sql_user" "provisioner" {
  name     = var.provisioner
  instance = google_sql_database_instance.this.name
  password = random_password.login["provisioner"].result
}

locals {
  host = google_sql_database_instance.this.private_ip_address
}

# duty -> postgresql:// URL of its login (the workload's secret)
resource "google_secret_manager_secret" "database_url" {
  for_each  = var.logins
  secret_id = "${var.name}-db-${each.key}-url"
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "database_url" {
  for_each    = var.logins
  secret      = google_secret_manager_secret.database_url[each.key].id
  secret_data = "postgresql://${each.value}:${random_password.login[each.key].result}@${local.host}:5432/${local.database}?sslmode=require"
}

# duty -> the bare password (<DUTY>_DB_PASSWORD of the provision job, which sets it)
resource "google_secret_manager_secret" "password" {
  for_each  = var.logins
  secret_id = "${var.name}-db-${each.key}-password"
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "password" {
  for_each    = var.logins
  secret      = google_secret_manager_secret.password[each.key].id
  secret_data = random_password.login[each.key].result
}

# PROVISION_SUPERUSER_DSN of the provision job
resource "google_secret_manager_secret" "provisioner_url" {
  secret_id = "${var.name}-db-provisioner-url"
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "provisioner_url" {
  secret      = google_secret_manager_secret.provisioner_url.id
  secret_data = "postgresql://${var.provisioner}:${random_password.login["provisioner"].result}@${local.host}:5432/postgres?sslmode=require"
}

output "private_ip" {
  description = "The instance's private address."
  value       = google_sql_database_instance.this.private_ip_address
}

output "database_url_secrets" {
  description = "Duty (migrator, shipper, retention, reader, backend) -> secret id of its login's postgresql:// URL."
  value       = { for duty, secret in google_secret_manager_secret.database_url : duty => secret.secret_id }
}

output "password_secrets" {
  description = "Duty -> secret id of its login's password (the provision job's <DUTY>_DB_PASSWORD)."
  value       = { for duty, secret in google_secret_manager_secret.password : duty => secret.secret_id }
}

output "provisioner_url_secret" {
  description = "Secret id of the provisioner's postgresql:// URL (PROVISION_SUPERUSER_DSN)."
  value       = google_secret_manager_secret.provisioner_url.secret_id
}

output "database" {
  description = "The gateway's database name."
  value       = local.database
}
