# The global external HTTPS load balancer in front of the entry points: one serverless NEG and
# backend service per Cloud Run service, a host rule per domain, a Google-managed certificate
# for all domains, TLS 1.2+ only, and HTTP redirected to HTTPS. DNS must point every domain at
# the `address` output before the certificate can become ACTIVE (15-60 minutes).

variable "name" {
  description = "Prefix of every resource name."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services."
  type        = string
}

variable "services" {
  description = "Domain -> Cloud Run service name, e.g. {\"cp.demo.example.com\" = \"gateway-cp\"}."
  type        = map(string)
}

variable "security_policy" {
  description = "Optional Cloud Armor policy attached to every backend service."
  type        = string
  default     = null
}

locals {
  service_names = toset(values(var.services))
}

resource "google_compute_global_address" "this" {
  name = "${var.name}-lb"
}

resource "google_compute_region_network_endpoint_group" "service" {
  for_each              = local.service_names
  name                  = "${each.key}-neg"
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = each.key
  }
}

resource "google_compute_backend_service" "service" {
  for_each              = local.service_names
  name                  = "${each.key}-backend"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = var.security_policy

  backend {
    group = google_compute_region_network_endpoint_group.service[each.key].id
  }

  log_config {
    enable      = true
    sample_rate = 1
  }
}

resource "google_compute_url_map" "https" {
  name = "${var.name}-https"
  # an unknown host gets the first entry point, which answers 404 problem+json for it
  default_service = google_compute_backend_service.service[values(var.services)[0]].id

  dynamic "host_rule" {
    for_each = var.services
    content {
      hosts        = [host_rule.key]
      path_matcher = replace(host_rule.key, ".", "-")
    }
  }

  dynamic "path_matcher" {
    for_each = var.services
    content {
      name            = replace(path_matcher.key, ".", "-")
      default_service = google_compute_backend_service.service[path_matcher.value].id
    }
  }
}

resource "google_compute_managed_ssl_certificate" "this" {
  name = "${var.name}-cert"
  managed {
    domains = keys(var.services)
  }
}

resource "google_compute_ssl_policy" "this" {
  name            = "${var.name}-tls"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "this" {
  name             = "${var.name}-https"
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.this.id]
  ssl_policy       = google_compute_ssl_policy.this.id
}

resource "google_compute_global_forwarding_rule" "https" {
  name                  = "${var.name}-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.this.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.this.id
}

resource "google_compute_url_map" "redirect" {
  name = "${var.name}-http-redirect"
  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "redirect" {
  name    = "${var.name}-http"
  url_map = google_compute_url_map.redirect.id
}

resource "google_compute_global_forwarding_rule" "http" {
  name                  = "${var.name}-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.this.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.redirect.id
}

output "address" {
  description = "The load balancer's IP: every domain's A record points here."
  value       = google_compute_global_address.this.address
}

output "certificate" {
  description = "The managed certificate (gcloud compute ssl-certificates describe NAME --global)."
  value       = google_compute_managed_ssl_certificate.this.name
}
