# The data layer of an environment (the seed's database step): network, Cloud SQL, Memorystore,
# the JWT issuers secret, the Artifact Registry repository, and who may read which secret.
# Secret access is granted per secret, never project-wide.

variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "region" {
  description = "Region of every regional resource."
  type        = string
}

variable "database_tier" {
  description = "Cloud SQL machine tier."
  type        = string
}

variable "database_ha" {
  description = "Cloud SQL REGIONAL."
  type        = bool
}

variable "redis_memory_size_gb" {
  description = "Memorystore memory."
  type        = number
}

variable "service_accounts" {
  description = "Identity -> service account email: plant, plant-internal, cp, pp, backend, migrate, provision."
  type        = map(string)
}

module "network" {
  source = "../../modules/network"
  name   = var.name
  region = var.region
}

module "database" {
  source                      = "../../modules/database"
  name                        = var.name
  region                      = var.region
  network_id                  = module.network.network_id
  private_services_connection = module.network.private_services_connection
  tier                        = var.database_tier
  high_availability           = var.database_ha
}

module "redis" {
  source                      = "../../modules/redis"
  name                        = var.name
  region                      = var.region
  network_id                  = module.network.network_id
  private_services_connection = module.network.private_services_connection
  memory_size_gb              = var.redis_memory_size_gb
}

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; a customer key is an organisation's choice (kms_key_name)
  repository_id = var.name
  location      = var.region
  format        = "DOCKER"
  description   = "The gateway's app and Envoy images"

  docker_config {
    immutable_tags = true
  }
}

# AUTHZ_JWT_ISSUERS (JSON list of trusted issuers: JWKS URLs or public keys). Terraform creates
# the secret, never its value: `gcloud secrets versions add NAME --data-file=issuers.json`.
resource "google_secret_manager_secret" "jwt_issuers" {
  secret_id = "${var.name}-jwt-issuers"
  replication {
    auto {}
  }
}

locals {
  gateways = ["plant", "plant-internal", "cp", "pp"]
  urls     = module.database.database_url_secrets
  # secret -> identities that read it
  readers = merge(
    { (google_secret_manager_secret.jwt_issuers.secret_id) = local.gateways },
    { (module.redis.redis_url_secret) = local.gateways },
    { (module.redis.redis_ca_secret) = local.gateways },
    # the audit shipper (and its retention) runs in every gateway service; all containers of a
    # service share its identity, so the authz sidecar could read them too (docs/DEPLOY.md)
    { (local.urls["shipper"]) = local.gateways },
    { (local.urls["retention"]) = local.gateways },
    { (local.urls["backend"]) = ["backend"] },
    { (local.urls["migrator"]) = ["migrate"] },
    # provisioning sets every login's password, as the provisioner
    { (module.database.provisioner_url_secret) = ["provision"] },
    { for duty, secret in module.database.password_secrets : secret => ["provision"] },
  )
  grants = merge([
    for secret, identities in local.readers : {
      for identity in identities : "${secret}/${identity}" => { secret = secret, identity = identity }
    }
  ]...)
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each  = local.grants
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${var.service_accounts[each.value.identity]}"
}

output "connector_id" {
  description = "The serverless VPC connector."
  value       = module.network.connector_id
}

output "database_url_secrets" {
  description = "Duty -> secret id of its login's postgresql:// URL."
  value       = module.database.database_url_secrets
}

output "password_secrets" {
  description = "Duty -> secret id of its login's password (the provision job's)."
  value       = module.database.password_secrets
}

output "provisioner_url_secret" {
  description = "Secret id of PROVISION_SUPERUSER_DSN."
  value       = module.database.provisioner_url_secret
}

output "database" {
  description = "The gateway's database name."
  value       = module.database.database
}

output "redis_url_secret" {
  description = "Secret id of AUTHZ_REDIS_URL."
  value       = module.redis.redis_url_secret
}

output "redis_ca_secret" {
  description = "Secret id of the Memorystore CA."
  value       = module.redis.redis_ca_secret
}

output "jwt_issuers_secret" {
  description = "Secret id of AUTHZ_JWT_ISSUERS."
  value       = google_secret_manager_secret.jwt_issuers.secret_id
}

output "artifact_registry" {
  description = "REGION-docker.pkg.dev/PROJECT/REPOSITORY."
  value       = "${var.region}-docker.pkg.dev/${google_artifact_registry_repository.images.project}/${google_artifact_registry_repository.images.repository_id}"
}
