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
  # Audit retention needs pg_cron; the log flags make every connection and slow lock visible.
  flags = {
    "cloudsql.enable_pg_cron"    = "on"
    "cron.database_name"         = local.database
    "log_checkpoints"            = "on"
    "log_connections"            = "on"
    "log_disconnections"         = "on"
    "log_lock_waits"             = "on"
    "log_min_messages"           = "error"
    "log_min_error_statement"    = "error"
    "log_min_duration_statement" = "-1"
    "log_temp_files"             = "0"
    "log_hostname"               = "on"
    "log_duration"               = "on"
    "log_statement"              = "ddl"
    "cloudsql.enable_pgaudit"    = "on"
  }
}

resource "google_sql_database_instance" "this" {
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

    dynamic "database_flags" {
      for_each = local.flags
      content {
        name  = database_flags.key
        value = database_flags.value
      }
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
