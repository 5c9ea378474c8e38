# Memorystore for Redis: the budget counters. STANDARD_HA (a replica in another zone with
# automatic failover), AUTH and in-transit encryption on, RDB snapshots every hour. The
# self-hosted Redis runs AOF with appendfsync everysec; Memorystore for Redis offers no AOF
# (docs/DEPLOY.md, "Redis persistence", says what that means for budgets).

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
  description = "The peering the instance needs (an explicit dependency)."
  type        = string
}

variable "memory_size_gb" {
  description = "Memory of the instance."
  type        = number
  default     = 1
}

resource "google_redis_instance" "this" {
  name                    = "${var.name}-redis"
  region                  = var.region
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.memory_size_gb
  redis_version           = "REDIS_7_2"
  authorized_network      = var.network_id
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  depends_on              = [var.private_services_connection]

  persistence_config {
    persistence_mode    = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 21
        minutes = 0
      }
    }
  }
}

resource "google_secret_manager_secret" "redis_url" {
  secret_id = "${var.name}-redis-url"
  replication {
    auto {}
  }
}

# The authz service's AUTHZ_REDIS_URL: TLS, the AUTH string, the CA mounted by the service.
resource "google_secret_manager_secret_version" "redis_url" {
  secret      = google_secret_manager_secret.redis_url.id
  secret_data = "rediss://:${google_redis_instance.this.auth_string}@${google_redis_instance.this.host}:${google_redis_instance.this.port}/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/gateway/redis-ca/ca.pem"
}

resource "google_secret_manager_secret" "redis_ca" {
  secret_id = "${var.name}-redis-ca"
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "redis_ca" {
  secret      = google_secret_manager_secret.redis_ca.id
  secret_data = join("\n", [for cert in google_redis_instance.this.server_ca_certs : cert.cert])
}

output "redis_url_secret" {
  description = "Secret Manager secret id of AUTHZ_REDIS_URL."
  value       = google_secret_manager_secret.redis_url.secret_id
}

output "redis_ca_secret" {
  description = "Secret Manager secret id of the server CA, mounted at /etc/gateway/redis-ca/ca.pem."
  value       = google_secret_manager_secret.redis_ca.secret_id
}
