# The VPC the services reach Cloud SQL and Memorystore through: a subnet with Private Google
# Access (service-to-service calls to run.app stay inside Google's network), the private
# services access range of Cloud SQL and Memorystore, and the serverless VPC connector.

variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "region" {
  description = "Region of the subnet and the connector."
  type        = string
}

variable "subnet_cidr" {
  description = "CIDR of the subnet."
  type        = string
  default     = "10.10.0.0/24"
}

variable "connector_cidr" {
  description = "A /28 for the serverless VPC connector."
  type        = string
  default     = "10.8.0.0/28"
}

variable "connector_instances" {
  description = "Min and max connector instances."
  type        = object({ min = number, max = number })
  default     = { min = 2, max = 10 }
}

resource "google_compute_network" "this" {
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
}

# No ingress from anywhere: the VPC only carries the services' egress (connector, peering).
resource "google_compute_firewall" "deny_ingress" {
  name      = "${var.name}-deny-ingress"
  network   = google_compute_network.this.name
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }

  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "this" {
  name                     = "${var.name}-${var.region}"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_global_address" "private_services" {
  name          = "${var.name}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 16
  network       = google_compute_network.this.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.this.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
}

resource "google_vpc_access_connector" "this" {
  name          = "${var.name}-connector"
  region        = var.region
  network       = google_compute_network.this.name
  ip_cidr_range = var.connector_cidr
  min_instances = var.connector_instances.min
  max_instances = var.connector_instances.max
}

output "network_id" {
  description = "The VPC's id."
  value       = google_compute_network.this.id
}

output "connector_id" {
  description = "The serverless VPC connector's id."
  value       = google_vpc_access_connector.this.id
}

output "private_services_connection" {
  description = "The private services access peering (Cloud SQL and Memorystore depend on it)."
  value       = google_service_networking_connection.private_services.id
}
