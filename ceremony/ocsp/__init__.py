"""OCSP for the online CAs: responses pre-signed by a delegated signer, stored, and served by a keyless responder."""
