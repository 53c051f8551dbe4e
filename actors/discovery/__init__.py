"""Discovery layer (next header 43): hostnames to I-LVs, by solicitation and advertisement."""
