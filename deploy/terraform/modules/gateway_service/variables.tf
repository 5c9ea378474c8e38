variable "name" {
  description = "Cloud Run service name; render's cloudrun target derives the hop URLs from it."
  type        = string
}

variable "region" {
  description = "Region of the service."
  type        = string
}

variable "entry" {
  description = "Entry point of the Envoy image to run: plant, cp or pp (GATEWAY_ENTRY)."
  type        = string
  validation {
    condition     = contains(["plant", "cp", "pp"], var.entry)
    error_message = "entry must be plant, cp or pp."
  }
}

variable "port" {
  description = "The entry point's listener port in the rendered config (8090, 8015, 8006)."
  type        = number
}

variable "envoy_image" {
  description = "The Envoy image (deploy/images/envoy.Dockerfile), by digest."
  type        = string
}

variable "app_image" {
  description = "The app image (deploy/images/app.Dockerfile), by digest; the same render args as envoy_image."
  type        = string
}

variable "service_account_email" {
  description = "The service's own identity (one per service)."
  type        = string
}

variable "ingress" {
  description = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER (entry points) or INGRESS_TRAFFIC_INTERNAL_ONLY."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
}

variable "invokers" {
  description = "Members granted roles/run.invoker: the service accounts of the hops that call it."
  type        = list(string)
  default     = []
}

variable "connector_id" {
  description = "Serverless VPC connector: all egress goes through the VPC (Redis, Cloud SQL, hops)."
  type        = string
}

variable "min_instances" {
  description = "Instances kept warm."
  type        = number
  default     = 1
}

variable "max_instances" {
  description = "Upper bound of instances (docs/DEPLOY.md, sizing)."
  type        = number
  default     = 10
}

variable "concurrency" {
  description = "Requests one instance takes at once."
  type        = number
  default     = 80
}

variable "envoy_resources" {
  description = "CPU and memory limits of the Envoy container."
  type        = map(string)
  default     = { cpu = "1", memory = "512Mi" }
}

variable "authz_resources" {
  description = "CPU and memory limits of the authz sidecar."
  type        = map(string)
  default     = { cpu = "1", memory = "512Mi" }
}

variable "authz_env" {
  description = "Plain AUTHZ_* settings of the authz sidecar (python -m authz_service settings)."
  type        = map(string)
  default     = {}
}

variable "authz_secret_env" {
  description = "Settings of the authz sidecar read from Secret Manager: variable -> secret id."
  type        = map(string)
  default     = {}
}

variable "redis_ca_secret" {
  description = "Secret id of the Memorystore CA, mounted at /etc/gateway/redis-ca/ca.pem."
  type        = string
}

variable "shipper_secret_env" {
  description = "The audit shipper's logins from Secret Manager: AUTHZ_SHIPPER_DATABASE_URL (required) and AUTHZ_SHIPPER_RETENTION_DATABASE_URL -> secret id."
  type        = map(string)
  validation {
    condition     = contains(keys(var.shipper_secret_env), "AUTHZ_SHIPPER_DATABASE_URL")
    error_message = "shipper_secret_env needs AUTHZ_SHIPPER_DATABASE_URL (the shipper login's URL)."
  }
}

variable "journal_size_limit" {
  description = "In-memory volume of the authz journal (the shipper empties it)."
  type        = string
  default     = "256Mi"
}

variable "journal_max_bytes" {
  description = "AUTHZ_AUDIT_JOURNAL_MAX_BYTES: checks are refused (503) past it; below the volume's size."
  type        = number
  default     = 201326592 # 192 MiB
}

variable "access_log_size_limit" {
  description = "In-memory volume of Envoy's access log (the shipper rotates it)."
  type        = string
  default     = "128Mi"
}

variable "access_log_rotate_bytes" {
  description = "AUTHZ_SHIPPER_ACCESS_LOG_ROTATE_BYTES: a shipped access log past it is rotated."
  type        = number
  default     = 33554432 # 32 MiB
}

variable "opa_image" {
  description = "Optional OPA sidecar on 127.0.0.1:8181 (empty: policies run in-process with regopy)."
  type        = string
  default     = ""
}

variable "opa_args" {
  description = "Arguments of the OPA sidecar, e.g. a bundle service that serves policies/."
  type        = list(string)
  default     = ["run", "--server", "--addr=127.0.0.1:8181", "--skip-version-check"]
}

variable "labels" {
  description = "Labels of the service."
  type        = map(string)
  default     = {}
}
