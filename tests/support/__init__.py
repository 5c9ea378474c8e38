"""What the tests share: builders, issuers and keys, ports, servers, waiting on conditions."""
