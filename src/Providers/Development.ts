/**
 * The development model: a `ProviderClient` that needs no language model. It
 * answers every chat with the same sentence and the user's last message, word
 * by word, so the whole chat path (streaming, storage, usage) can be tried
 * and tested on a machine without an LLM.
 *
 * It is stored as an `openai-compatible` provider whose base URL is
 * `builtin:development` (the kinds are fixed by a CHECK constraint); the API
 * accepts only http(s) base URLs, so only the server itself registers it.
 */
import { Effect, Option, Stream } from "effect"
import type { ChatChunk, ChatRequest } from "./Chat.js"
import { type DiscoveredModel, feedOf, type ProviderClient } from "./Client.js"

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

export const make = (): ProviderClient => ({
  chat,
  answer: (request) => feedOf(chat(request)),
  listModels: Effect.succeed([developmentModel]),
  ping: Effect.void,
  runtime: Option.none()
})
