/**
 * The REST API contract: every group, and the errors any endpoint may answer.
 * Clients import this module (schemas only) to get a typed `HttpApiClient`.
 */
import { HttpApi, OpenApi } from "@effect/platform"
import { withRoutesBeside } from "./ApiBeside.js"
import { AuthApi } from "./Auth/Api.js"
import { ChatApi } from "./Chat/Api.js"
import { ConversationsApi } from "./Conversations/Api.js"
import { InternalError, NotFound, PayloadTooLarge, ValidationError } from "./Domain/Errors.js"
import { FeedbackApi } from "./Feedback/Api.js"
import { FilesApi } from "./Files/Api.js"
import { UsageApi } from "./Gateway/Api.js"
import { GraphApi } from "./Graph/Api.js"
import { HealthApi } from "./Health/Api.js"
import { ModelConfigsApi, ModelsApi, ProvidersApi } from "./Models/Api.js"
import { OidcApi } from "./Oidc/Api.js"
import { PublicSharesApi, SharesApi } from "./Shares/Api.js"
import { AdminApi, MeApi } from "./Users/Api.js"

/** This server's version, as the API document and the exported traces give it. */
export const serverVersion = "0.1.0"

/**
 * Request decoding failures are answered as `ValidationError` (422) by the
 * error model (see `Http/ErrorModel.ts`); the platform's own 400
 * `HttpApiDecodeError` never reaches a client, so the document omits it.
 */
const withoutPlatformDecodeError = (spec: Record<string, unknown>): Record<string, unknown> => {
  const ref = "#/components/schemas/HttpApiDecodeError"
  const paths = spec.paths as Record<string, Record<string, { responses?: Record<string, unknown> }>>
  for (const operations of Object.values(paths)) {
    for (const operation of Object.values(operations)) {
      const response = operation.responses?.["400"] as
        | { content?: { "application/json"?: { schema?: { $ref?: string; anyOf?: Array<{ $ref?: string }> } } } }
        | undefined
      const schema = response?.content?.["application/json"]?.schema
      if (!schema || !operation.responses) continue
      if (schema.$ref === ref) {
        delete operation.responses["400"]
      } else if (schema.anyOf) {
        schema.anyOf = schema.anyOf.filter((member) => member.$ref !== ref)
      }
    }
  }
  const components = spec.components as { schemas?: Record<string, unknown> } | undefined
  delete components?.schemas?.["HttpApiDecodeError"]
  if (components?.schemas) dropUnreferenced(spec, components.schemas)
  return withoutRepeatedIds(spec) as Record<string, unknown>
}

/** Removes component schemas nothing refers to any more (what only the platform's decode error used). */
const dropUnreferenced = (spec: Record<string, unknown>, schemas: Record<string, unknown>) => {
  for (let changed = true; changed;) {
    changed = false
    const text = JSON.stringify(spec)
    for (const name of Object.keys(schemas)) {
      if (!text.includes(`"#/components/schemas/${name}"`)) {
        delete schemas[name]
        changed = true
      }
    }
  }
}

/**
 * Effect describes `unknown`/`any` values with a fixed `$id`, which is invalid
 * once it appears twice in one document; those ids carry no meaning, so drop them.
 */
const withoutRepeatedIds = (node: unknown): unknown => {
  if (Array.isArray(node)) return node.map(withoutRepeatedIds)
  if (node === null || typeof node !== "object") return node
  const entries = Object.entries(node).filter(([key, value]) =>
    !(key === "$id" && (value === "/schemas/unknown" || value === "/schemas/any"))
  )
  return Object.fromEntries(entries.map(([key, value]) => [key, withoutRepeatedIds(value)]))
}

export class WebPlusApi extends HttpApi.make("webplus")
  .add(HealthApi)
  .add(AuthApi)
  .add(OidcApi)
  .add(AdminApi)
  .add(MeApi)
  .add(ConversationsApi)
  .add(ChatApi)
  .add(FeedbackApi)
  .add(FilesApi)
  .add(GraphApi)
  .add(SharesApi)
  .add(PublicSharesApi)
  .add(ProvidersApi)
  .add(ModelsApi)
  .add(ModelConfigsApi)
  .add(UsageApi)
  .addError(ValidationError)
  .addError(NotFound)
  .addError(PayloadTooLarge)
  .addError(InternalError)
  .annotateContext(OpenApi.annotations({
    title: "Web+ API",
    version: serverVersion,
    description: "Self-hostable backend for an LLM chat platform. Every error body has `_tag` and `message`.",
    transform: (spec) => withoutPlatformDecodeError(withRoutesBeside(spec))
  }))
{}
