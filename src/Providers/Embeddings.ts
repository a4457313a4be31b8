/**
 * What embedding a batch of inputs looks like to the server, whatever wire
 * protocol the provider speaks: a request (texts, or token arrays for the
 * APIs that take them) and one vector per input, in the inputs' order, with
 * the prompt tokens the provider counted. OpenAI-style APIs
 * (`POST /v1/embeddings`) and Ollama (`POST /api/embed`) embed; Anthropic's
 * API has no embeddings, and the development model makes vectors of its own.
 */
import { HttpApiSchema } from "@effect/platform"
import { type Effect, Schema } from "effect"
import { ProviderError, type ProviderFailure } from "../Models/Errors.js"
import type { ProviderConnection } from "./Client.js"

/** The inputs of one request: texts, or texts a tokenizer already turned into token ids. */
export type EmbedInput =
  | { readonly _tag: "texts"; readonly texts: ReadonlyArray<string> }
  | { readonly _tag: "tokens"; readonly tokens: ReadonlyArray<ReadonlyArray<number>> }

export interface EmbedRequest {
  /** The model as the provider names it. */
  readonly model: string
  readonly input: EmbedInput
  /** The size of each vector, for models that can shorten theirs; the model's own size when absent. */
  readonly dimensions?: number | undefined
}

export interface Embeddings {
  /** One vector per input, in the inputs' order. */
  readonly vectors: ReadonlyArray<ReadonlyArray<number>>
  readonly promptTokens: number
}

/**
 * A request the provider's API cannot take: no embeddings at all (`param` "model"), no token
 * arrays ("input"), or a size it cannot make ("dimensions"). Known before anything is sent.
 */
export class EmbeddingsUnsupported extends Schema.TaggedError<EmbeddingsUnsupported>()(
  "EmbeddingsUnsupported",
  { message: Schema.String, param: Schema.Literal("model", "input", "dimensions") },
  HttpApiSchema.annotations({ status: 400, description: "The model's provider cannot embed this request" })
) {}

/** What a provider that embeds offers (`ProviderClient.embedder`). */
export interface Embedder {
  /** Why this API cannot take `request`, if it cannot; checked before `embed` is called. */
  readonly refusal: (request: EmbedRequest) => EmbeddingsUnsupported | undefined
  /** Sends the request; the vectors come back in the inputs' order, as many as there were inputs. */
  readonly embed: (request: EmbedRequest) => Effect.Effect<Embeddings, ProviderFailure>
}

/** A vector's float32 values as little-endian bytes: how vectors are stored, and OpenAI's `base64` encoding. */
export const float32Bytes = (vector: ReadonlyArray<number>): Uint8Array => {
  const bytes = new Uint8Array(vector.length * 4)
  const view = new DataView(bytes.buffer)
  vector.forEach((value, index) => view.setFloat32(index * 4, value, true))
  return bytes
}

/** How many inputs a request holds. */
export const inputCount = (input: EmbedInput): number =>
  input._tag === "texts" ? input.texts.length : input.tokens.length

/** Refuses token arrays, for APIs that take text only. */
export const textOnly = (name: string) => (request: EmbedRequest): EmbeddingsUnsupported | undefined =>
  request.input._tag === "tokens"
    ? new EmbeddingsUnsupported({
      message: `${name} embeds text only: send 'input' as a string or an array of strings, not token arrays.`,
      param: "input"
    })
    : undefined

/** A provider's vectors that are not one per input: its answer cannot be matched to the inputs. */
export const countMismatch = (connection: ProviderConnection, expected: number, received: number) =>
  new ProviderError({
    message: `${connection.name} sent ${received} embeddings for ${expected} inputs`,
    upstreamStatus: null
  })
