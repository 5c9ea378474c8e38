# The foundation of an environment (the seed's waooaw-foundation-deploy): the global HTTPS load
# balancer, its managed certificate and a serverless NEG per entry point. Applied after the app
# and after DNS points every domain at the reserved address.

variable "project_id" {
  description = "The GCP project of this environment."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services."
  type        = string
  default     = "asia-south1"
}

variable "environment" {
  description = "Environment name: demo, staging, prod."
  type        = string
}

variable "service_prefix" {
  description = "Prefix of the Cloud Run service names (as in the app stack)."
  type        = string
  default     = "gateway"
}

variable "domains" {
  description = "Entry point -> domain, e.g. {cp = \"cp.demo.example.com\"}; an entry point left out is not exposed (plant when plant_public is false)."
  type        = map(string)
  validation {
    condition     = length(var.domains) > 0 && alltrue([for entry in keys(var.domains) : contains(["plant", "cp", "pp"], entry)])
    error_message = "domains: keys are plant, cp or pp; at least one."
  }
}

variable "security_policy" {
  description = "Optional Cloud Armor policy for every backend service."
  type        = string
  default     = null
}

module "foundation" {
  source          = "../modules/foundation"
  name            = "${var.service_prefix}-${var.environment}"
  region          = var.region
  services        = { for entry, domain in var.domains : domain => "${var.service_prefix}-${entry}" }
  security_policy = var.security_policy
}

output "address" {
  description = "Point every domain's A record here, then wait for the certificate."
  value       = module.foundation.address
}

output "certificate" {
  description = "The managed certificate's name."
  value       = module.foundation.certificate
}
