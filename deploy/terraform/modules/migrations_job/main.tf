# The Cloud Run job that runs `alembic upgrade head` as the migrations role (its own service
# account and database login, from Secret Manager). The db-migrations workflow executes it.

variable "name" {
  description = "Job name."
  type        = string
}

variable "region" {
  description = "Region of the job."
  type        = string
}

variable "app_image" {
  description = "The app image (it carries migrations/ and alembic.ini), by digest."
  type        = string
}

variable "service_account_email" {
  description = "The job's own identity."
  type        = string
}

variable "database_url_secret" {
  description = "Secret id of the migrations role's postgresql:// URL."
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
        command = ["alembic"]
        args    = ["upgrade", "head"]

        env {
          name = "AUTHZ_DATABASE_URL"
          value_source {
            secret_key_ref {
              secret  = var.database_url_secret
              version = "latest"
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
