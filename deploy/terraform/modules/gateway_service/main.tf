# One gateway entry point on Cloud Run: the Envoy container takes the traffic; the authz service
# is a sidecar on 127.0.0.1:9001 in the same instance (render's cloudrun target), started first
# (Envoy depends on its gRPC startup probe). The audit trail (authz_service/audit/README.md):
# authz journals to an in-memory volume the shipper sidecar shares, Envoy writes its access log
# to another (render's cloudrun audit.access_log_dir), and the shipper, the only container with
# database logins, ships both to PostgreSQL; it reaches Envoy's admin on the instance's
# loopback to rotate the log. An OPA sidecar is optional.

locals {
  journal_dir    = "/var/run/gateway/journal"     # the app image's AUTHZ_*_JOURNAL_DIR
  access_log_dir = "/var/run/gateway/access-logs" # render's cloudrun target
  opa_env        = var.opa_image == "" ? {} : { AUTHZ_OPA_URL = "http://127.0.0.1:8181" }
  authz_env = merge(
    {
      GATEWAY_ROLE                  = "authz"
      AUTHZ_GRPC_ADDRESS            = "127.0.0.1:9001"
      AUTHZ_METRICS_ADDRESS         = "127.0.0.1:9464"
      AUTHZ_ADMIN_ADDRESS           = ""
      AUTHZ_AUDIT_JOURNAL_DIR       = local.journal_dir
      AUTHZ_AUDIT_JOURNAL_MAX_BYTES = tostring(var.journal_max_bytes)
      # let Envoy's health checks move away before new checks are refused (SIGTERM)
      AUTHZ_SHUTDOWN_DRAIN_SECONDS = "2"
    },
    local.opa_env,
    var.authz_env,
  )
  shipper_env = {
    GATEWAY_ROLE                          = "shipper"
    AUTHZ_SHIPPER_JOURNAL_DIR             = local.journal_dir
    AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST     = "/etc/gateway/audit/access_logs.json" # from render, in the image
    AUTHZ_SHIPPER_ACCESS_LOGS             = var.entry                             # this instance's Envoy only
    AUTHZ_SHIPPER_ACCESS_LOG_ROTATE_BYTES = tostring(var.access_log_rotate_bytes)
    AUTHZ_SHIPPER_HEALTH_ADDRESS          = "0.0.0.0:9465"
  }
}

resource "google_cloud_run_v2_service" "this" {
  name                = var.name
  location            = var.region
  ingress             = var.ingress
  deletion_protection = false
  labels              = var.labels

  template {
    service_account                  = var.service_account_email
    max_instance_request_concurrency = var.concurrency
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "30s"
    labels                           = var.labels

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      connector = var.connector_id
      egress    = "ALL_TRAFFIC"
    }

    volumes {
      name = "audit-journal"
      empty_dir {
        medium     = "MEMORY"
        size_limit = var.journal_size_limit
      }
    }

    volumes {
      name = "access-logs"
      empty_dir {
        medium     = "MEMORY"
        size_limit = var.access_log_size_limit
      }
    }

    volumes {
      name = "redis-ca"
      secret {
        secret = var.redis_ca_secret
        items {
          version = "latest"
          path    = "ca.pem"
        }
      }
    }

    containers {
      name       = "envoy"
      image      = var.envoy_image
      depends_on = ["authz"]

      ports {
        container_port = var.port
      }

      env {
        name  = "GATEWAY_ENTRY"
        value = var.entry
      }

      resources {
        limits            = var.envoy_resources
        startup_cpu_boost = true
      }

      startup_probe {
        period_seconds    = 2
        failure_threshold = 30
        http_get {
          path = "/ready"
          port = var.port
        }
      }

      liveness_probe {
        period_seconds    = 10
        failure_threshold = 3
        http_get {
          path = "/ready"
          port = var.port
        }
      }

      volume_mounts {
        name       = "access-logs"
        mount_path = local.access_log_dir
      }
    }

    containers {
      name  = "authz"
      image = var.app_image

      dynamic "env" {
        for_each = local.authz_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.authz_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      resources {
        limits            = var.authz_resources
        startup_cpu_boost = true
      }

      # grpc.health.v1 overall status: SERVING once the runtime config and policies loaded
      startup_probe {
        period_seconds    = 2
        failure_threshold = 30
        grpc {
          port = 9001
        }
      }

      liveness_probe {
        period_seconds    = 10
        failure_threshold = 3
        grpc {
          port = 9001
        }
      }

      volume_mounts {
        name       = "audit-journal"
        mount_path = local.journal_dir
      }

      volume_mounts {
        name       = "redis-ca"
        mount_path = "/etc/gateway/redis-ca"
      }
    }

    containers {
      name    = "shipper"
      image   = var.app_image
      command = ["python3", "-m", "authz_service", "audit", "ship"]

      dynamic "env" {
        for_each = local.shipper_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.shipper_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      resources {
        limits = { cpu = "0.5", memory = "256Mi" }
      }

      # started once it listens (it keeps the journal until PostgreSQL takes it)
      startup_probe {
        period_seconds    = 2
        failure_threshold = 30
        tcp_socket {
          port = 9465
        }
      }

      volume_mounts {
        name       = "audit-journal"
        mount_path = local.journal_dir
      }

      volume_mounts {
        name       = "access-logs"
        mount_path = local.access_log_dir
      }
    }

    dynamic "containers" {
      for_each = var.opa_image == "" ? [] : ["opa"]
      content {
        name  = "opa"
        image = var.opa_image
        args  = var.opa_args

        resources {
          limits = { cpu = "0.5", memory = "256Mi" }
        }

        startup_probe {
          period_seconds    = 2
          failure_threshold = 30
          http_get {
            path = "/health?bundles"
            port = 8181
          }
        }
      }
    }
  }
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = toset(var.invokers)
  name     = google_cloud_run_v2_service.this.name
  location = var.region
  role     = "roles/run.invoker"
  member   = each.value
}

output "name" {
  description = "The service's name."
  value       = google_cloud_run_v2_service.this.name
}

output "uri" {
  description = "The service's run.app URL (the ID token audience of the hops that call it)."
  value       = google_cloud_run_v2_service.this.uri
}
