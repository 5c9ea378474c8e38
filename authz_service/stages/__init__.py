"""The numbered pipeline stages; each has one public async function and a typed result."""
