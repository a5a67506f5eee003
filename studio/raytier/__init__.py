"""The Ray Serve model tier (`studio launch --ray`): `client` is the UI process's side (the bridge process it
owns and the stand-in pipelines the host hands out), `serve` runs in the bridge process and the Serve replicas
(each replica builds a `ModelHost`), and `protocol` holds the names both sides share. Nothing here imports
Ray at import time."""
