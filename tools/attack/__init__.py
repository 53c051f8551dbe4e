"""`ilnp-attack`: what a rogue on the LAN can do to the overlay, to rerun the security
tests by hand (docs/SECURITY.md). Run it only inside a lab namespace."""
