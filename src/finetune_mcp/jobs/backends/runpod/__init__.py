"""The RunPod backend: a pod runs the same worker as a local job. `backend` (the Backend: start,
poll, cancel, always terminating the pod), `api` (the REST/GraphQL calls through the `runpod`
client), `client` (our side of the pod's HTTP worker: upload, sync, artifacts) and `pod_server`
(the HTTP worker that runs on the pod)."""
