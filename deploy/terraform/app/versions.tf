# Remote state in a GCS bucket, configured at init (docs/DEPLOY.md, "Remote state"):
#   terraform init -backend-config="bucket=PROJECT-tfstate" -backend-config="prefix=gateway/app/ENV"
terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.20"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
  default_labels = {
    app         = "envoy-authz-gateway"
    environment = var.environment
  }
}
