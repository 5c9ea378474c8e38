# One gateway entry point on Cloud Run: the Envoy container takes the traffic; the authz service
# is a sidecar on 127.0.0.1:9001 in the same instance (render's cloudrun target), started first
# (Envoy depends on its gRPC startup probe). With issue 12's audit shipper, authz journals to
# an in-memory volume that Envoy's access log and the shipper share; the shipper alone holds
# database credentials. An OPA sidecar is optional.

locals {
  run_dir     = "/var/run/gateway"
  shipper_env = var.audit_shipper ? { AUTHZ_AUDIT_JOURNAL_DIR = "${local.run_dir}/journal" } : {}
  opa_env     = var.opa_image == "" ? {} : { AUTHZ_OPA_URL = "http://127.0.0.1:8181" }
  authz_env = merge(
    {
      GATEWAY_ROLE          = "authz"
      AUTHZ_GRPC_ADDRESS    = "127.0.0.1:9001"
      AUTHZ_METRICS_ADDRESS = "127.0.0.1:9464"
      AUTHZ_ADMIN_ADDRESS   = ""
      AUTHZ_AUDIT_SPOOL_DIR = "${local.run_dir}/spool"
      # let Envoy's health checks move away before new checks are refused (SIGTERM)
      AUTHZ_SHUTDOWN_DRAIN_SECONDS = "2"
    },
    local.shipper_env,
    local.opa_env,
    var.authz_env,
  )
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
      name = "gateway-run"
      empty_dir {
        medium     = "MEMORY"
        size_limit = "256Mi"
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
        name       = "gateway-run"
        mount_path = local.run_dir
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
        name       = "gateway-run"
        mount_path = local.run_dir
      }

      volume_mounts {
        name       = "redis-ca"
        mount_path = "/etc/gateway/redis-ca"
      }
    }

    dynamic "containers" {
      for_each = var.audit_shipper ? ["shipper"] : []
      content {
        name    = "shipper"
        image   = var.app_image
        command = ["python3", "-m", "authz_service", "audit", "ship"]

        env {
          name  = "AUTHZ_AUDIT_JOURNAL_DIR"
          value = "${local.run_dir}/journal"
        }

        env {
          name = "AUTHZ_DATABASE_URL"
          value_source {
            secret_key_ref {
              secret  = var.shipper_database_url_secret
              version = "latest"
            }
          }
        }

        resources {
          limits = { cpu = "0.5", memory = "256Mi" }
        }

        volume_mounts {
          name       = "gateway-run"
          mount_path = local.run_dir
        }
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

  lifecycle {
    precondition {
      condition     = !var.audit_shipper || var.shipper_database_url_secret != ""
      error_message = "audit_shipper needs shipper_database_url_secret."
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
