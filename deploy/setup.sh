#!/usr/bin/env bash
# Wire a bucket to a receiver: bucket notification -> topic -> authenticated push
# subscription (with a dead-letter topic and a retry policy), the APIs, the image
# repository, and every IAM binding the identities involved need. Idempotent: it
# creates what is missing and updates what exists, so run it again after changing a
# value. docs/deploying.md runs it step by step, from an empty project to a first push.
#
# Needs gcloud, logged in as someone who may administer IAM, Pub/Sub and the bucket.
#   PROJECT_ID=my-project BUCKET=my-models PUSH_ENDPOINT=https://push.example.com/push \
#     REGION=us-central1 K8S_NAMESPACE=serving deploy/setup.sh
# Optional: PREFIX (models/), TOPIC, SUBSCRIPTION, PUSH_SA_NAME, RECEIVER_SA_NAME,
# AUDIENCE (default: PUSH_ENDPOINT), REGION (creates the Artifact Registry repository
# REPOSITORY, default containers, and lets the GKE nodes' NODE_SA pull from it),
# K8S_NAMESPACE (binds the receiver's Kubernetes service account model-receiver to its
# Google one through Workload Identity), CLOUD_RUN_SERVICE (with REGION: lets the push
# service account invoke that Cloud Run service, roles/run.invoker).
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID}"
: "${BUCKET:?set BUCKET, the bucket name without gs://}"
: "${PUSH_ENDPOINT:?set PUSH_ENDPOINT, the https:// URL of the receiver}"
PREFIX="${PREFIX:-models/}"
TOPIC="${TOPIC:-model-uploads}"
DEAD_LETTER_TOPIC="${DEAD_LETTER_TOPIC:-${TOPIC}-dead-letter}"
SUBSCRIPTION="${SUBSCRIPTION:-model-receiver}"
PUSH_SA_NAME="${PUSH_SA_NAME:-pubsub-push}"
RECEIVER_SA_NAME="${RECEIVER_SA_NAME:-model-receiver}"
AUDIENCE="${AUDIENCE:-$PUSH_ENDPOINT}"
K8S_NAMESPACE="${K8S_NAMESPACE:-}"
REGION="${REGION:-}"
REPOSITORY="${REPOSITORY:-containers}"
CLOUD_RUN_SERVICE="${CLOUD_RUN_SERVICE:-}"
if [[ -n "$CLOUD_RUN_SERVICE" && -z "$REGION" ]]; then
  echo "CLOUD_RUN_SERVICE needs REGION, the service's region" >&2
  exit 2
fi

PUSH_SA="${PUSH_SA_NAME}@${PROJECT_ID}.iam.gserviceaccount.com"
RECEIVER_SA="${RECEIVER_SA_NAME}@${PROJECT_ID}.iam.gserviceaccount.com"

say() { printf '==> %s\n' "$*"; }
g() { gcloud --project="$PROJECT_ID" --quiet "$@"; }

say "enabling the APIs"
g services enable pubsub.googleapis.com storage.googleapis.com iam.googleapis.com \
  compute.googleapis.com artifactregistry.googleapis.com container.googleapis.com \
  run.googleapis.com

PROJECT_NUMBER=$(g projects describe "$PROJECT_ID" --format='value(projectNumber)')
NODE_SA="${NODE_SA:-${PROJECT_NUMBER}-compute@developer.gserviceaccount.com}"
PUBSUB_AGENT="service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
STORAGE_AGENT=$(g storage service-agent)

for name in "$PUSH_SA_NAME" "$RECEIVER_SA_NAME"; do
  if ! g iam service-accounts describe "${name}@${PROJECT_ID}.iam.gserviceaccount.com" \
      >/dev/null 2>&1; then
    say "creating service account $name"
    g iam service-accounts create "$name" --display-name="$name (model receiver)"
  fi
done

for topic in "$TOPIC" "$DEAD_LETTER_TOPIC"; do
  if ! g pubsub topics describe "$topic" >/dev/null 2>&1; then
    say "creating topic $topic"
    g pubsub topics create "$topic"
  fi
done
# Dead letters need a subscription of their own, or Pub/Sub drops them.
if ! g pubsub subscriptions describe "${DEAD_LETTER_TOPIC}-hold" >/dev/null 2>&1; then
  say "creating ${DEAD_LETTER_TOPIC}-hold to keep dead letters for inspection"
  g pubsub subscriptions create "${DEAD_LETTER_TOPIC}-hold" --topic="$DEAD_LETTER_TOPIC" \
    --message-retention-duration=7d
fi

say "letting Cloud Storage publish to $TOPIC"
g pubsub topics add-iam-policy-binding "$TOPIC" \
  --member="serviceAccount:${STORAGE_AGENT}" --role=roles/pubsub.publisher >/dev/null

# gcloud lists each notification as {"Bucket URL": ..., "Notification Configuration":
# {"topic": "//pubsub.googleapis.com/projects/P/topics/T", ...}}.
topic_path="//pubsub.googleapis.com/projects/${PROJECT_ID}/topics/${TOPIC}"
if ! g storage buckets notifications list "gs://${BUCKET}" --format=json \
    | grep -F "\"${topic_path}\"" >/dev/null; then  # not -q: an early exit fails the pipe
  say "creating the notification gs://${BUCKET}/${PREFIX}* -> $TOPIC"
  g storage buckets notifications create "gs://${BUCKET}" --topic="$TOPIC" \
    --payload-format=json --event-types=OBJECT_FINALIZE,OBJECT_DELETE \
    --object-prefix="$PREFIX"
fi

say "letting Pub/Sub mint push tokens as $PUSH_SA"
g iam service-accounts add-iam-policy-binding "$PUSH_SA" \
  --member="serviceAccount:${PUBSUB_AGENT}" \
  --role=roles/iam.serviceAccountTokenCreator >/dev/null

push_flags=(
  --push-endpoint="$PUSH_ENDPOINT"
  --push-auth-service-account="$PUSH_SA"
  --push-auth-token-audience="$AUDIENCE"
  --ack-deadline=600
  --dead-letter-topic="$DEAD_LETTER_TOPIC"
  --max-delivery-attempts=10
  --min-retry-delay=10s
  --max-retry-delay=600s
)
if g pubsub subscriptions describe "$SUBSCRIPTION" >/dev/null 2>&1; then
  say "updating subscription $SUBSCRIPTION"
  g pubsub subscriptions update "$SUBSCRIPTION" "${push_flags[@]}"
else
  say "creating push subscription $SUBSCRIPTION -> $PUSH_ENDPOINT"
  g pubsub subscriptions create "$SUBSCRIPTION" --topic="$TOPIC" "${push_flags[@]}"
fi

say "letting Pub/Sub move undeliverable messages to $DEAD_LETTER_TOPIC"
g pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" \
  --member="serviceAccount:${PUBSUB_AGENT}" --role=roles/pubsub.publisher >/dev/null
g pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" \
  --member="serviceAccount:${PUBSUB_AGENT}" --role=roles/pubsub.subscriber >/dev/null

say "letting the receiver ($RECEIVER_SA) read gs://${BUCKET}"
g storage buckets add-iam-policy-binding "gs://${BUCKET}" \
  --member="serviceAccount:${RECEIVER_SA}" --role=roles/storage.objectViewer >/dev/null

if [[ -n "$REGION" ]]; then
  if ! g artifacts repositories describe "$REPOSITORY" --location="$REGION" >/dev/null 2>&1; then
    say "creating the image repository ${REGION}-docker.pkg.dev/${PROJECT_ID}/${REPOSITORY}"
    g artifacts repositories create "$REPOSITORY" --location="$REGION" \
      --repository-format=docker
  fi
  say "letting the GKE nodes ($NODE_SA) pull images from $REPOSITORY"
  g artifacts repositories add-iam-policy-binding "$REPOSITORY" --location="$REGION" \
    --member="serviceAccount:${NODE_SA}" --role=roles/artifactregistry.reader >/dev/null
fi

if [[ -n "$CLOUD_RUN_SERVICE" ]]; then
  # Cloud Run lets in only principals with the invoker role: the push, and nobody else.
  say "letting $PUSH_SA invoke Cloud Run service $CLOUD_RUN_SERVICE"
  g run services add-iam-policy-binding "$CLOUD_RUN_SERVICE" --region="$REGION" \
    --member="serviceAccount:${PUSH_SA}" --role=roles/run.invoker >/dev/null
fi

if [[ -n "$K8S_NAMESPACE" ]]; then
  say "binding Kubernetes ${K8S_NAMESPACE}/model-receiver to $RECEIVER_SA (Workload Identity)"
  g iam service-accounts add-iam-policy-binding "$RECEIVER_SA" \
    --member="serviceAccount:${PROJECT_ID}.svc.id.goog[${K8S_NAMESPACE}/model-receiver]" \
    --role=roles/iam.workloadIdentityUser >/dev/null
fi

if [[ -n "$REGION" ]]; then
  say "push the image to ${REGION}-docker.pkg.dev/${PROJECT_ID}/${REPOSITORY}/model-receiver"
fi
say "done. Run the receiver (as $RECEIVER_SA) with:"
printf '  RECEIVER_SOURCE=gs://%s/%s\n' "$BUCKET" "${PREFIX%/}"
printf '  RECEIVER_AUDIENCE=%s\n' "$AUDIENCE"
printf '  RECEIVER_ALLOWED_SENDERS=%s\n' "$PUSH_SA"
