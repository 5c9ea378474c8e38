# Cloud SQL for PostgreSQL 15 on a private IP only, with pg_cron (audit retention), backups and
# point-in-time recovery, TLS required. Credentials live in Secret Manager: a generated password
# per database role (migrations, the audit shipper, the backend, readers); Terraform creates
# the migrations login only; the migrations create the group roles, and the other logins are
# created inside them (authz_service/audit/README.md, "Roles") with the passwords stored here.

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

variable "login_roles" {
  description = "Database logins that get a generated password in Secret Manager."
  type        = list(string)
  default     = ["gateway_migrations", "gateway_audit_shipper", "gateway_backend", "gateway_audit_reader"]
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
  for_each = toset(var.login_roles)
  length   = 40
  special  = false
}

# Only the migrations login is a Cloud SQL user (cloudsqlsuperuser: it creates the group
# roles and pg_cron); every other login is created by the migrations role inside its group.
resource "google_sql_user" "migrations" {
  name     = "gateway_migrations"
  instance = google_sql_database_instance.this.name
  password = random_password.login["gateway_migrations"].result
}

resource "google_secret_manager_secret" "database_url" {
  for_each  = toset(var.login_roles)
  secret_id = "${var.name}-db-${replace(each.key, "_", "-")}"
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "database_url" {
  for_each    = toset(var.login_roles)
  secret      = google_secret_manager_secret.database_url[each.key].id
  secret_data = "postgresql://${each.key}:${random_password.login[each.key].result}@${google_sql_database_instance.this.private_ip_address}:5432/${local.database}?sslmode=require"
}

output "private_ip" {
  description = "The instance's private address."
  value       = google_sql_database_instance.this.private_ip_address
}

output "database_url_secrets" {
  description = "Login role -> id of the Secret Manager secret holding its postgresql:// URL."
  value       = { for role, secret in google_secret_manager_secret.database_url : role => secret.secret_id }
}
