# One environment of the gateway on Cloud Run: `module.data` (network, Cloud SQL, Memorystore,
# secrets, registry) and the migrations job are the seed's database step
# (`-target=module.data -target=module.migrations`); then the backend and the PLANT, CP and PP
# services. Each service and the job
# run as their own service account, which may read only its own secrets; each hop may invoke
# only the service it calls (CP, PP -> PLANT -> backend).

locals {
  name = "${var.service_prefix}-${var.environment}"
  # entry point -> listener port of the rendered config (config/gateway.yaml)
  entries = { plant = 8090, cp = 8015, pp = 8006 }
  labels  = { environment = var.environment }
  identities = {
    plant   = "PLANT gateway"
    cp      = "CP gateway"
    pp      = "PP gateway"
    backend = "reference backend"
    migrate = "migrations job"
  }
}

module "data" {
  source = "./data"

  name                 = local.name
  region               = var.region
  database_tier        = var.database_tier
  database_ha          = var.database_high_availability
  redis_memory_size_gb = var.redis_memory_size_gb
  service_accounts     = { for key, account in google_service_account.this : key => account.email }
}

resource "google_service_account" "this" {
  for_each     = local.identities
  account_id   = "${var.service_prefix}-${each.key}"
  display_name = "${each.value} (${var.environment})"
}

module "migrations" {
  source = "../modules/migrations_job"

  name                  = "${var.service_prefix}-migrate"
  region                = var.region
  app_image             = var.app_image
  service_account_email = google_service_account.this["migrate"].email
  database_url_secret   = module.data.database_url_secrets["gateway_migrations"]
  connector_id          = module.data.connector_id
  labels                = local.labels
}

resource "google_cloud_run_v2_service" "backend" {
  name                = "${var.service_prefix}-backend"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = false
  labels              = local.labels

  template {
    service_account                  = google_service_account.this["backend"].email
    max_instance_request_concurrency = var.scaling["backend"].concurrency

    scaling {
      min_instance_count = var.scaling["backend"].min_instances
      max_instance_count = var.scaling["backend"].max_instances
    }

    vpc_access {
      connector = module.data.connector_id
      egress    = "PRIVATE_RANGES_ONLY"
    }

    containers {
      image   = var.app_image
      command = ["python3", "-m", "backend", "--host", "0.0.0.0", "--port", "8091"]

      ports {
        container_port = 8091
      }

      env {
        name  = "GATEWAY_ROLE"
        value = "backend"
      }

      env {
        name = "BACKEND_DATABASE_URL"
        value_source {
          secret_key_ref {
            secret  = module.data.database_url_secrets["gateway_backend"]
            version = "latest"
          }
        }
      }

      startup_probe {
        period_seconds    = 2
        failure_threshold = 30
        http_get {
          path = "/health"
          port = 8091
        }
      }

      liveness_probe {
        period_seconds = 10
        http_get {
          path = "/health"
          port = 8091
        }
      }
    }
  }
}

resource "google_cloud_run_v2_service_iam_member" "backend_invoker" {
  name     = google_cloud_run_v2_service.backend.name
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.this["plant"].email}"
}

module "gateway" {
  source   = "../modules/gateway_service"
  for_each = local.entries

  name                  = "${var.service_prefix}-${each.key}"
  region                = var.region
  entry                 = each.key
  port                  = each.value
  envoy_image           = var.envoy_image
  app_image             = var.app_image
  service_account_email = google_service_account.this[each.key].email
  connector_id          = module.data.connector_id
  min_instances         = var.scaling[each.key].min_instances
  max_instances         = var.scaling[each.key].max_instances
  concurrency           = var.scaling[each.key].concurrency
  redis_ca_secret       = module.data.redis_ca_secret
  audit_shipper         = var.audit_shipper
  opa_image             = var.opa_image
  labels                = local.labels
  # CP and PP are called by clients through the load balancer; PLANT by the CP and PP hops
  # (an ID token for its URL), and by clients too when plant_public.
  invokers = each.key != "plant" ? ["allUsers"] : concat(
    [for hop in ["cp", "pp"] : "serviceAccount:${google_service_account.this[hop].email}"],
    var.plant_public ? ["allUsers"] : [],
  )
  authz_env = { AUTHZ_WORKERS = tostring(var.authz_workers) }
  authz_secret_env = merge(
    {
      AUTHZ_JWT_ISSUERS = module.data.jwt_issuers_secret
      AUTHZ_REDIS_URL   = module.data.redis_url_secret
    },
    # before issue 12 the authz sidecar writes the audit rows itself
    var.audit_shipper ? {} : { AUTHZ_DATABASE_URL = module.data.database_url_secrets["gateway_audit_shipper"] },
  )
  shipper_database_url_secret = module.data.database_url_secrets["gateway_audit_shipper"]
}
