variable "project_id" {
  description = "The GCP project of this environment (one project per environment)."
  type        = string
}

variable "region" {
  description = "Region of every regional resource."
  type        = string
  default     = "asia-south1"
}

variable "environment" {
  description = "Environment name: demo, staging, prod."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment: lowercase letters, digits and dashes, 2-21 characters."
  }
}

variable "service_prefix" {
  description = "Prefix of the Cloud Run service names; render's cloudrun target must get the same (--var service_prefix=...)."
  type        = string
  default     = "gateway"
}

variable "app_image" {
  description = "The app image by digest (REGION-docker.pkg.dev/PROJECT/gateway/app@sha256:...)."
  type        = string
}

variable "envoy_image" {
  description = "The Envoy image by digest, rendered for this project (render --target cloudrun --var project_number=...)."
  type        = string
}

variable "plant_public" {
  description = "PLANT is also a client entry point behind the load balancer (allUsers may invoke it; its own JWT checks still apply). The CP/PP hops use <prefix>-plant-internal either way."
  type        = bool
  default     = true
}

variable "authz_workers" {
  description = "AUTHZ_WORKERS of the authz sidecar (issue 14's worker processes)."
  type        = number
  default     = 1
}

variable "opa_image" {
  description = "Optional OPA sidecar image (empty: policies run in-process)."
  type        = string
  default     = ""
}

variable "scaling" {
  description = "Per service: min and max instances and requests per instance (docs/DEPLOY.md, sizing)."
  type = map(object({
    min_instances = number
    max_instances = number
    concurrency   = number
  }))
  default = {
    plant   = { min_instances = 1, max_instances = 20, concurrency = 80 }
    cp      = { min_instances = 1, max_instances = 10, concurrency = 80 }
    pp      = { min_instances = 1, max_instances = 10, concurrency = 80 }
    backend = { min_instances = 1, max_instances = 20, concurrency = 80 }
  }
}

variable "database_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-2-7680"
}

variable "database_high_availability" {
  description = "Cloud SQL REGIONAL (standby in another zone)."
  type        = bool
  default     = true
}

variable "redis_memory_size_gb" {
  description = "Memorystore memory."
  type        = number
  default     = 1
}
