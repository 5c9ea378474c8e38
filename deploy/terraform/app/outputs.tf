output "service_urls" {
  description = "Entry point -> run.app URL (render's cloudrun target derives the same from the project number)."
  value       = { for entry, service in module.gateway : entry => service.uri }
}

output "backend_url" {
  description = "The reference backend's run.app URL (internal ingress)."
  value       = google_cloud_run_v2_service.backend.uri
}

output "plant_internal_url" {
  description = "PLANT's internal listener (the CP/PP hops' audience; internal ingress, CP and PP invokers only)."
  value       = module.plant_internal.uri
}

output "provision_job" {
  description = "Name of the provisioning job (run it before the migrations job)."
  value       = module.provision.name
}

output "migrations_job" {
  description = "Name of the migrations job."
  value       = module.migrations.name
}

output "artifact_registry" {
  description = "Docker repository for the images."
  value       = module.data.artifact_registry
}
