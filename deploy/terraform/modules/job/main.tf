# A one-shot Cloud Run job of the app image with its own service account, reaching Cloud SQL
# through the VPC connector, its settings from Secret Manager: the provisioning (python3 -m
# devstack provision, as the provisioner) and the migrations (alembic upgrade head, as the
# migrations login). The db-migrations workflow executes both, in that order.

variable "name" {
  description = "Job name."
  type        = string
}

variable "region" {
  description = "Region of the job."
  type        = string
}

variable "app_image" {
  description = "The app image (it carries migrations/, alembic.ini and devstack/), by digest."
  type        = string
}

variable "command" {
  description = "The job's command."
  type        = list(string)
}

variable "args" {
  description = "Its arguments."
  type        = list(string)
  default     = []
}

variable "secret_env" {
  description = "Environment variable -> Secret Manager secret id (its latest version)."
  type        = map(string)
}

variable "service_account_email" {
  description = "The job's own identity (it may read only its own secrets)."
  type        = string
}

variable "connector_id" {
  description = "Serverless VPC connector (Cloud SQL has a private IP only)."
  type        = string
}

variable "labels" {
  description = "Labels of the job."
  type        = map(string)
  default     = {}
}

resource "google_cloud_run_v2_job" "this" {
  name                = var.name
  location            = var.region
  deletion_protection = false
  labels              = var.labels

  template {
    task_count = 1
    template {
      service_account = var.service_account_email
      max_retries     = 1
      timeout         = "900s"

      vpc_access {
        connector = var.connector_id
        egress    = "PRIVATE_RANGES_ONLY"
      }

      containers {
        image   = var.app_image
        command = var.command
        args    = var.args

        dynamic "env" {
          for_each = var.secret_env
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
          limits = { cpu = "1", memory = "512Mi" }
        }
      }
    }
  }
}

output "name" {
  description = "The job's name (gcloud run jobs execute NAME --wait)."
  value       = google_cloud_run_v2_job.this.name
}
