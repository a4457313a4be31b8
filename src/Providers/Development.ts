/**
 * The development model: a `ProviderClient` that needs no language model. It
 * answers every chat with the same sentence and the user's last message, word
 * by word, so the whole chat path (streaming, storage, usage) can be tried
 * and tested on a machine without an LLM.
 *
 * It embeds too, for trying the embeddings API only: each text's vector
 * counts its words (lower-cased), each hashed to one of the vector's
 * positions with a sign, scaled to length 1. The same text always gets the
 * same vector and texts sharing words point alike, but it knows no meaning.
 *
 * It is stored as an `openai-compatible` provider whose base URL is
 * `builtin:development` (the kinds are fixed by a CHECK constraint); the API
 * accepts only http(s) base URLs, so only the server itself registers it.
 */
import { Effect, Option, Stream } from "effect"
import type { ChatChunk, ChatRequest } from "./Chat.js"
import { type DiscoveredModel, feedOf, type ProviderClient } from "./Client.js"
import { type Embedder, EmbeddingsUnsupported, textOnly } from "./Embeddings.js"

export const developmentBaseUrl = "builtin:development"

export const developmentModel: DiscoveredModel = {
  providerModel: "webplus-development",
  displayName: "Development model (echo, not an LLM)",
  contextWindow: 8192,
  capabilities: ["completion"],
  metadata: {}
}

/** Pause before each word, so clients see a stream rather than one piece. */
const wordDelay = "20 millis"

const wordsOf = (text: string) => text.split(/\s+/).filter((word) => word.length > 0)

export const reply = (request: ChatRequest): string => {
  const said = request.messages.filter((message) => message.role === "user").at(-1)?.content.trim() ?? ""
  return `This is the development model of Web+, not a language model. You said: ${said}`
}

const chat = (request: ChatRequest): Stream.Stream<ChatChunk> => {
  const words = wordsOf(reply(request))
  const promptTokens = request.messages.reduce((count, message) => count + wordsOf(message.content).length, 0)
  return Stream.fromIterable(words.map((word, index) => index === 0 ? word : ` ${word}`)).pipe(
    Stream.mapEffect((text) => Effect.as(Effect.sleep(wordDelay), { _tag: "text", text } as const)),
    Stream.concat(Stream.make<Array<ChatChunk>>(
      { _tag: "usage", promptTokens, completionTokens: words.length },
      { _tag: "finish", reason: "stop" }
    ))
  )
}

/** The size of the development model's vectors, unless a request asks for another. */
export const developmentDimensions = 256

/** The largest size it makes: its vectors are held in memory, a batch at a time. */
export const developmentMaxDimensions = 4096

/** FNV-1a, 32 bits: a word's position and sign in a vector. */
const hashOf = (word: string): number => {
  let hash = 0x811c9dc5
  for (let index = 0; index < word.length; index++) {
    hash ^= word.charCodeAt(index)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

/** `text`'s vector of `dimensions` numbers, of length 1 (all zeros for a text without words). */
export const embedText = (text: string, dimensions: number): Array<number> => {
  const vector = new Array<number>(dimensions).fill(0)
  for (const word of wordsOf(text.toLowerCase())) {
    const hash = hashOf(word)
    vector[hash % dimensions]! += hash & 0x80000000 ? -1 : 1
  }
  const length = Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0))
  return length === 0 ? vector : vector.map((value) => value / length)
}

const embedder: Embedder = {
  refusal: (request) =>
    textOnly("The development model")(request) ??
      (request.dimensions !== undefined && request.dimensions > developmentMaxDimensions
        ? new EmbeddingsUnsupported({
          message: `The development model makes vectors of at most ${developmentMaxDimensions} dimensions.`,
          param: "dimensions"
        })
        : undefined),
  embed: (request) =>
    Effect.sync(() => {
      const texts = request.input._tag === "texts" ? request.input.texts : []
      return {
        vectors: texts.map((text) => embedText(text, request.dimensions ?? developmentDimensions)),
        promptTokens: texts.reduce((count, text) => count + wordsOf(text).length, 0)
      }
    })
}

export const make = (): ProviderClient => ({
  chat,
  answer: (request) => feedOf(chat(request)),
  listModels: Effect.succeed([developmentModel]),
  ping: Effect.void,
  runtime: Option.none(),
  embedder: Option.some(embedder),
  tokenCounter: Option.none()
})
