"""Node identity and signatures: Ed25519 keys, key ids, detached signing and verification."""
