/** The knowledge graph: extractions from conversations and files, and the entities and relationships found. */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { Forbidden, NotFound, RateLimited, ServiceUnavailable } from "../Domain/Errors.js"
import { NonNegativeInt } from "../Domain/Fields.js"
import { ConversationId, FileId, LlmModelId, UuidV7 } from "../Domain/Ids.js"
import { Page, PageParams } from "../Domain/Pagination.js"
import { request } from "../Domain/Request.js"
import { ProviderError, ProviderTimeout, ProviderUnavailable, ProviderUnreachable } from "../Models/Errors.js"

export const GraphEntityId = UuidV7.pipe(Schema.brand("GraphEntityId"))
export type GraphEntityId = typeof GraphEntityId.Type
export const GraphExtractionId = UuidV7.pipe(Schema.brand("GraphExtractionId"))
export type GraphExtractionId = typeof GraphExtractionId.Type

export const SourceKind = Schema.Literal("conversation", "file")
export type SourceKind = typeof SourceKind.Type

export const Confidence = Schema.Number.pipe(Schema.between(0, 1)).annotations({
  description: "How sure the model was, from 0 to 1"
})

export class GraphSource extends Schema.Class<GraphSource>("GraphSource")({
  kind: SourceKind,
  id: UuidV7.annotations({ description: "The conversation's or the file's id" })
}) {}

export class ExtractionView extends Schema.Class<ExtractionView>("ExtractionView")({
  id: GraphExtractionId,
  source: GraphSource,
  modelId: Schema.NullOr(LlmModelId),
  status: Schema.Literal("pending", "processing", "complete", "error"),
  entityCount: NonNegativeInt,
  relationshipCount: NonNegativeInt,
  error: Schema.NullOr(Schema.String),
  attempts: NonNegativeInt,
  createdAt: Schema.DateTimeUtc,
  completedAt: Schema.NullOr(Schema.DateTimeUtc)
}) {}

export class EntityView extends Schema.Class<EntityView>("EntityView")({
  id: GraphEntityId,
  name: Schema.String,
  type: Schema.String.annotations({ description: "person, organization, place, concept, …, as the model typed it" }),
  description: Schema.String,
  confidence: Confidence.annotations({ description: "The highest confidence any source gave it" }),
  mentionCount: NonNegativeInt.annotations({ description: "In how many sources it was found" }),
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
}) {}

export class RelatedEntity extends Schema.Class<RelatedEntity>("RelatedEntity")({
  id: GraphEntityId,
  name: Schema.String,
  type: Schema.String
}) {}

export class RelationshipView extends Schema.Class<RelationshipView>("RelationshipView")({
  type: Schema.String.annotations({ description: "works_at, part_of, …, read from the source to the target" }),
  direction: Schema.Literal("outgoing", "incoming").annotations({
    description: "`outgoing`: this entity is the source of the edge; `incoming`: its target"
  }),
  entity: RelatedEntity.annotations({ description: "The entity at the other end" }),
  confidence: Confidence,
  source: GraphSource.annotations({ description: "Where the relationship was last found" })
}) {}

export class MentionView extends Schema.Class<MentionView>("MentionView")({
  source: GraphSource,
  confidence: Confidence,
  createdAt: Schema.DateTimeUtc
}) {}

export class EntityDetail extends Schema.Class<EntityDetail>("EntityDetail")({
  entity: EntityView,
  relationships: Schema.Array(RelationshipView),
  mentions: Schema.Array(MentionView)
}) {}

export class RequestExtractionPayload extends Schema.Class<RequestExtractionPayload>("RequestExtractionPayload")({
  conversationId: Schema.optional(ConversationId).annotations({ description: "Read a conversation's active branch" }),
  fileId: Schema.optional(FileId).annotations({ description: "Read a text file" }),
  modelId: Schema.optional(LlmModelId).annotations({ description: "The model to read with; a usable one if omitted" })
}) {}

export const EntitySearch = request(Schema.Struct({
  ...PageParams.fields,
  q: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200))).annotations({
    description: "Entities whose name contains this (case-blind)"
  }),
  type: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(50))),
  minConfidence: Schema.optional(Schema.NumberFromString.pipe(Schema.between(0, 1))).annotations({
    description: "Only entities found with at least this confidence (0 to 1)"
  })
}))

/** The most results a semantic search answers. */
export const maxSimilar = 50

export const SimilarSearch = request(Schema.Struct({
  q: Schema.String.pipe(Schema.maxLength(1000), Schema.pattern(/\S/)).annotations({
    description: "What to look for, in words: it is embedded and compared with each entity's type, name and description"
  }),
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, maxSimilar))).annotations({
    description: "How many entities to answer, best first (default 10)"
  }),
  minScore: Schema.optional(Schema.NumberFromString.pipe(Schema.between(-1, 1))).annotations({
    description: "Only entities at least this similar (cosine similarity, -1 to 1)"
  })
}))

export class SimilarEntity extends Schema.Class<SimilarEntity>("SimilarEntity")({
  entity: EntityView,
  score: Schema.Number.pipe(Schema.between(-1, 1)).annotations({
    description: "Cosine similarity of the entity's vector and the query's, from -1 to 1 (higher is closer)"
  })
}) {}

export class SimilarEntities extends Schema.Class<SimilarEntities>("SimilarEntities")({
  items: Schema.Array(SimilarEntity)
}) {}

const EntityPath = request(Schema.Struct({ id: GraphEntityId }))
const ExtractionPath = request(Schema.Struct({ id: GraphExtractionId }))

export class GraphApi extends HttpApiGroup.make("graph")
  .add(
    HttpApiEndpoint.post("requestExtraction", "/api/v1/graph/extractions")
      .setPayload(request(RequestExtractionPayload))
      .addSuccess(ExtractionView, { status: 202 })
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(
        OpenApi.Summary,
        "Have a model read a conversation or a text file for entities and relationships (in the background)"
      )
      .annotate(
        OpenApi.Description,
        "Within the same budgets and limits as a chat turn (the token budgets, `CHAT_RATE_LIMIT_PER_USER`): " +
          "429 `RateLimited` with `Retry-After`, and nothing queued, when the caller is over one. The tokens " +
          "it takes are counted in the usage reports under the source `extraction`."
      )
  )
  .add(
    HttpApiEndpoint.get("listExtractions", "/api/v1/graph/extractions")
      .setUrlParams(PageParams)
      .addSuccess(Page(ExtractionView))
      .annotate(OpenApi.Summary, "Your extractions, newest first: what was read, by which model, and how it went")
  )
  .add(
    HttpApiEndpoint.get("getExtraction", "/api/v1/graph/extractions/:id")
      .setPath(ExtractionPath)
      .addSuccess(ExtractionView)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.get("searchEntities", "/api/v1/graph/entities")
      .setUrlParams(EntitySearch)
      .addSuccess(Page(EntityView))
      .annotate(OpenApi.Summary, "Your entities by name, optionally of one type")
  )
  .add(
    HttpApiEndpoint.get("similarEntities", "/api/v1/graph/similar")
      .setUrlParams(SimilarSearch)
      .addSuccess(SimilarEntities)
      .addError(NotFound)
      .addError(ServiceUnavailable)
      .addError(RateLimited)
      .addError(ProviderUnreachable)
      .addError(ProviderTimeout)
      .addError(ProviderError)
      .addError(ProviderUnavailable)
      .annotate(OpenApi.Summary, "Your entities closest in meaning to a text (semantic search), best first")
      .annotate(
        OpenApi.Description,
        "Off unless the server sets `EMBEDDING_MODEL` (404 then). Ranks the entities embedded so far: " +
          "an extraction's entities shortly after it completes. 503 `ServiceUnavailable` when the configured " +
          "model is not usable or cannot embed; the provider's failures as 502, 503 and 504. Within the same " +
          "budgets and limits as a chat turn (429 `RateLimited` with `Retry-After` when over one); the query's " +
          "embedding is counted under the source `graph`."
      )
  )
  .add(
    HttpApiEndpoint.get("getEntity", "/api/v1/graph/entities/:id")
      .setPath(EntityPath)
      .addSuccess(EntityDetail)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "An entity, its relationships either way, and where it was found")
  )
  .add(
    HttpApiEndpoint.del("deleteEntity", "/api/v1/graph/entities/:id")
      .setPath(EntityPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Delete an entity with its relationships and mentions")
  )
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "The knowledge graph a model extracts from your conversations and files")
{}
