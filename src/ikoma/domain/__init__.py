"""The domain: order lifecycle, leases, retry policy and errors. Imports no framework."""
