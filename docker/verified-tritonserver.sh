#!/bin/sh
# Entrypoint of the production Triton image: refuses to start tritonserver on a model repository whose files do
# not match the SHA-256 manifest written at export (a changed model.py, model.onnx or config is named), so that
# whoever can write the artifact store cannot run code on the serving host.
#   TNS_REPOSITORY                  the model repository (default /models)
#   TNS_REPOSITORY_MANIFEST         its export manifest (default: repository_manifest.json beside it)
#   TNS_REPOSITORY_MANIFEST_SHA256  the manifest's hash: the registered version's tag
#                                   tns.export.repository_manifest_sha256 (required)
# Further arguments go to tritonserver; those that would load files outside the verified repository, or reload it
# after the check (--model-repository, --model-control-mode other than none, --repository-poll-secs), are refused.
# Mount the repository read-only: what was verified is then what is served.
set -eu
for argument in "$@"; do
  case "$argument" in
    --model-repository*|--model-store*|--repository-poll-secs*|--model-control-mode=poll|--model-control-mode=explicit|--model-control-mode)
      echo "verified-tritonserver: refusing tritonserver argument '$argument': it would serve files that were not verified" >&2
      exit 2 ;;
  esac
done
repository="${TNS_REPOSITORY:-/models}"
manifest="${TNS_REPOSITORY_MANIFEST:-$(dirname "$repository")/repository_manifest.json}"
expected="${TNS_REPOSITORY_MANIFEST_SHA256:?set TNS_REPOSITORY_MANIFEST_SHA256 to the version tag tns.export.repository_manifest_sha256}"
tns verify --repository "$repository" --manifest "$manifest" --manifest-sha256 "$expected" --remove-bytecode
PATH="${TNS_SERVING_ENV:-/opt/tns/models-env}/bin:$PATH" exec "${TNS_TRITONSERVER:-tritonserver}" --model-repository="$repository" "$@"
