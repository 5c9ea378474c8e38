# One environment of the gateway on Cloud Run: `module.data` (network, Cloud SQL, Memorystore,
# secrets, registry) and the provision and migrations jobs are the seed's database step
# (`-target=module.data -target=module.provision -target=module.migrations`); then the backend
# and the PLANT, PLANT-internal, CP and PP services. Each service and job runs as its own service
# account, which may read only its own secrets; each hop may invoke only the service it calls
# (CP, PP -> PLANT's internal listener -> backend).
#
# The CP/PP -> PLANT hop (docs/DEPLOY.md): a Cloud Run service has one port, so PLANT's internal
# listener, the only one that keeps the x-causation-id a hop sets, is a service of its own:
# <prefix>-plant-internal runs the same PLANT images with its container port on that listener,
# internal ingress only, invokable by the CP and PP service accounts alone. The public PLANT
# service (port 8090, plant_public) strips a client's x-causation-id like every public listener.

locals {
  name = "${var.service_prefix}-${var.environment}"
  # entry point -> listener port of the rendered config (config/gateway.yaml); PLANT only when
  # clients call it directly
  entries = { for entry, port in { plant = 8090, cp = 8015, pp = 8006 } : entry => port if entry != "plant" || var.plant_public }
  # PLANT's internal listener (entry_points.plant.internal.port): the hops' own service
  plant_internal_port = 8190
  labels              = { environment = var.environment }
  identities = {
    plant            = "PLANT gateway"
    "plant-internal" = "PLANT gateway, internal listener (the CP/PP hop)"
    cp               = "CP gateway"
    pp               = "PP gateway"
    backend          = "reference backend"
    migrate          = "migrations job"
    provision        = "database provisioning job"
  }
  hop_invokers = [for hop in ["cp", "pp"] : "serviceAccount:${google_service_account.this[hop].email}"]
  # the gateway services' settings from Secret Manager: authz's, and the audit shipper's logins
  authz_secret_env = {
    AUTHZ_JWT_ISSUERS = module.data.jwt_issuers_secret
    AUTHZ_REDIS_URL   = module.data.redis_url_secret
  }
  shipper_secret_env = {
    AUTHZ_SHIPPER_DATABASE_URL           = module.data.database_url_secrets["shipper"]
    AUTHZ_SHIPPER_RETENTION_DATABASE_URL = module.data.database_url_secrets["retention"]
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

# Once per environment (idempotent; the db-migrations workflow runs it before the migrations):
# the group roles, the logins with the passwords Terraform generated, the database owned by the
# migrations login, pg_cron's retention job as the retention login. The only use of the
# provisioner (cloudsqlsuperuser).
module "provision" {
  source = "../modules/job"

  name                  = "${var.service_prefix}-provision"
  region                = var.region
  app_image             = var.app_image
  command               = ["python3", "-m", "devstack", "provision"]
  args                  = ["--database", module.data.database, "--passwords-from-env"]
  service_account_email = google_service_account.this["provision"].email
  connector_id          = module.data.connector_id
  labels                = local.labels
  secret_env = merge(
    { PROVISION_SUPERUSER_DSN = module.data.provisioner_url_secret },
    { for duty, secret in module.data.password_secrets : "${upper(duty)}_DB_PASSWORD" => secret },
  )
}

# alembic upgrade head as the migrations login (alembic reads AUTHZ_DATABASE_URL)
module "migrations" {
  source = "../modules/job"

  name                  = "${var.service_prefix}-migrate"
  region                = var.region
  app_image             = var.app_image
  command               = ["alembic"]
  args                  = ["upgrade", "head"]
  service_account_email = google_service_account.this["migrate"].email
  connector_id          = module.data.connector_id
  labels                = local.labels
  secret_env            = { AUTHZ_DATABASE_URL = module.data.database_url_secrets["migrator"] }
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
            secret  = module.data.database_url_secrets["backend"]
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
  for_each = toset(["plant", "plant-internal"])
  name     = google_cloud_run_v2_service.backend.name
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.this[each.key].email}"
}

# The entry points clients call (through the load balancer): CP, PP, and PLANT when plant_public.
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
  opa_image             = var.opa_image
  labels                = local.labels
  invokers              = ["allUsers"] # their own JWT checks apply; the LB is the way in
  authz_env             = { AUTHZ_WORKERS = tostring(var.authz_workers) }
  authz_secret_env      = local.authz_secret_env
  shipper_secret_env    = local.shipper_secret_env
}

# PLANT's internal listener for the CP and PP hops: the PLANT images, the container port on the
# internal listener, reachable from inside the project only and invokable by CP and PP alone
# (render's cloudrun target sends them to its run.app URL with an ID token for it).
module "plant_internal" {
  source = "../modules/gateway_service"

  name                  = "${var.service_prefix}-plant-internal"
  region                = var.region
  entry                 = "plant"
  port                  = local.plant_internal_port
  ingress               = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  envoy_image           = var.envoy_image
  app_image             = var.app_image
  service_account_email = google_service_account.this["plant-internal"].email
  connector_id          = module.data.connector_id
  min_instances         = var.scaling["plant"].min_instances
  max_instances         = var.scaling["plant"].max_instances
  concurrency           = var.scaling["plant"].concurrency
  redis_ca_secret       = module.data.redis_ca_secret
  opa_image             = var.opa_image
  labels                = local.labels
  invokers              = local.hop_invokers
  authz_env             = { AUTHZ_WORKERS = tostring(var.authz_workers) }
  authz_secret_env      = local.authz_secret_env
  shipper_secret_env    = local.shipper_secret_env
}
