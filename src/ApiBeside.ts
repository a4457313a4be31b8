/**
 * The routes served beside the REST API's `HttpApi`: the WebSockets (server
 * events, chat), Effect RPC and the OpenAI- and Anthropic-compatible gateway. Their paths are
 * part of the contract (clients need them), and the OpenAPI document describes
 * them too, so that `/docs` lists every way in: the gateway's bodies from the
 * schemas the gateway itself decodes and encodes; the sockets' protocols in
 * words (OpenAPI has no way to describe a WebSocket's messages).
 */
import { JSONSchema, type Schema } from "effect"
import { Message, MessagesErrorBody, MessagesRequest, MessageStreamEvent } from "./Gateway/MessagesSchemas.js"
import {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  EmbeddingList,
  EmbeddingRequest,
  ErrorBody,
  GatewayModel,
  ModelList
} from "./Gateway/Schemas.js"

/** The server's events: model statuses, conversation titles (WebSocket). */
export const eventsPath = "/api/v1/events"

/** Chat over a plain WebSocket, for clients that do not use Effect. */
export const chatSocketPath = "/api/v1/chat/ws"

/** Events of one answer the chat socket sends beyond the client's last acknowledgement. */
export const chatSocketWindow = 64

/** Answers streaming on one chat socket at once. */
export const chatSocketMaxOpen = 4

/** Effect RPC: NDJSON over HTTP (`POST`), JSON over a WebSocket (`GET`). */
export const rpcPath = "/rpc"

/** The path prefix OpenAI's clients put after their base URL (`http://host/v1`); Anthropic's put it after theirs (`http://host`). */
export const gatewayPrefix = "/v1"

type Json = Record<string, unknown>

const bearer = [{ bearer: [] }]

/** Anthropic's clients send the key as `x-api-key`; the bearer header works too. */
const apiKeyHeader = [{ apiKey: [] }, { bearer: [] }]

const jsonContent = (schema: Json) => ({ "application/json": { schema } })

const described = (description: string) => ({ description })

const webSocketResponses = {
  "101": described("Switching Protocols: the socket is open"),
  "401": described("Missing or invalid credentials (`Unauthorized`)"),
  "426": described("Not a WebSocket upgrade (`UpgradeRequired`)")
}

const credentialDescription = "Credentials: the `Authorization: Bearer …` header, or for browsers the " +
  "`access_token` query parameter or the subprotocols `webplus.bearer, <token>`."

const socketPaths: Json = {
  [eventsPath]: {
    get: {
      tags: ["realtime"],
      summary: "Server events (WebSocket)",
      description: "JSON text messages, each `{ \"type\", … }`: first `snapshot` (`models`: the state of every " +
        "model you may see), then `model.status`, `model.removed`, `model.pull` (administrators), " +
        "`conversation.title` (your conversations' generated titles) and `ping`. Model events need " +
        "`models:read`, titles `conversations:read`; either opens the socket. " + credentialDescription,
      parameters: [{ name: "access_token", in: "query", required: false, schema: { type: "string" } }],
      security: bearer,
      responses: {
        ...webSocketResponses,
        "403": described("Neither `models:read` nor `conversations:read` (`Forbidden`)"),
        "429": described("Too many event sockets open for this user (`RateLimited`)")
      }
    }
  },
  [chatSocketPath]: {
    get: {
      tags: ["realtime"],
      summary: "Chat over a WebSocket",
      description: "JSON text messages. The client sends `{ \"type\": \"auth\", \"token\" }` first (unless the " +
        "upgrade carried an `Authorization` header), then `chat` (`content`, `conversationId?`, `modelId?`, " +
        "`modelConfigId?`, `ref?`), `ack` (`messageId`, `id`) and `cancel` (`conversationId`, `messageId`). " +
        "The server sends `ready`, then `event` (the Server-Sent Events' `start` … `done`, with the `ref`) " +
        "and `error` (`_tag`, `message`, `retryAfterSeconds` when rate-limited). An answer's events run at " +
        `most ${chatSocketWindow} ahead of the client's last \`ack\`; at most ${chatSocketMaxOpen} answers ` +
        "stream on one socket.",
      security: bearer,
      responses: {
        "101": described("Switching Protocols: the socket is open"),
        "400": described("Not a WebSocket upgrade")
      }
    }
  },
  [rpcPath]: {
    post: {
      tags: ["rpc"],
      summary: "Effect RPC over HTTP (NDJSON)",
      description: "The operations of `WebPlusRpcs` (`src/Rpc/Api.ts`) for `@effect/rpc` clients, with " +
        "`RpcSerialization.layerNdjson`. Chat answers are streams. Credentials per call: " +
        "`Authorization: Bearer …` or `X-API-Key`.",
      responses: { "200": described("NDJSON messages of the RPC protocol") }
    },
    get: {
      tags: ["rpc"],
      summary: "Effect RPC over a WebSocket (JSON)",
      description: "The same operations over one socket, with `RpcSerialization.layerJson`; the calls of " +
        "one socket run side by side, and a defect ends its own call only.",
      responses: { "101": described("Switching Protocols: the socket is open") }
    }
  }
}

/** OpenAI's error body, as the gateway answers every failure. */
const gatewayError = (definitions: Json) => (description: string) => ({
  description,
  content: jsonContent(schemaOf(ErrorBody, definitions))
})

const schemaOf = (schema: Schema.Schema.Any, definitions: Json): Json =>
  JSONSchema.fromAST(schema.ast, {
    definitions: definitions as Record<string, JSONSchema.JsonSchema7>,
    definitionPath: "#/components/schemas/",
    target: "openApi3.1"
  }) as unknown as Json

/** Anthropic's error body, as `POST /v1/messages` answers every failure. */
const messagesError = (definitions: Json) => (description: string) => ({
  description,
  content: jsonContent(schemaOf(MessagesErrorBody, definitions))
})

const gatewayPaths = (definitions: Json): Json => {
  const error = gatewayError(definitions)
  const anthropicError = messagesError(definitions)
  const failures = {
    "401": error("No API key, or an invalid one (`invalid_api_key`)"),
    "403": error("The key lacks the scope (`permission_error`)")
  }
  return {
    [`${gatewayPrefix}/models`]: {
      get: {
        tags: ["gateway"],
        summary: "The models you may use (OpenAI's format)",
        security: bearer,
        responses: { "200": { description: "OK", content: jsonContent(schemaOf(ModelList, definitions)) }, ...failures }
      }
    },
    [`${gatewayPrefix}/models/{model}`]: {
      get: {
        tags: ["gateway"],
        summary: "One model (OpenAI's format); its id may contain slashes",
        security: bearer,
        parameters: [{ name: "model", in: "path", required: true, schema: { type: "string" } }],
        responses: {
          "200": { description: "OK", content: jsonContent(schemaOf(GatewayModel, definitions)) },
          ...failures,
          "404": error("No such model, or not one you may use (`model_not_found`)")
        }
      }
    },
    [`${gatewayPrefix}/chat/completions`]: {
      post: {
        tags: ["gateway"],
        summary: "A chat completion (OpenAI's format), streamed or not",
        description: "For OpenAI's SDKs and any OpenAI-compatible client (`baseURL: http://host/v1`). With " +
          "`stream: true` the answer is Server-Sent Events, each `data:` a `chat.completion.chunk`, ending " +
          "with `data: [DONE]`; `stream_options.include_usage` adds a last chunk with the usage. Tools and " +
          "`tool_choice` are passed to the model. Usage is recorded for the key.",
        security: bearer,
        requestBody: { required: true, content: jsonContent(schemaOf(ChatCompletionRequest, definitions)) },
        responses: {
          "200": {
            description: "The completion; with `stream: true`, its chunks as Server-Sent Events",
            content: {
              ...jsonContent(schemaOf(ChatCompletion, definitions)),
              "text/event-stream": { schema: schemaOf(ChatCompletionChunk, definitions) }
            }
          },
          "400": error("The request does not match the schema (`invalid_request_error`, `param` names the field)"),
          ...failures,
          "404": error("No such model (`model_not_found`)"),
          "413": error("The body is larger than `MAX_BODY_SIZE` (`request_too_large`)"),
          "429": error("`CHAT_RATE_LIMIT_PER_USER` or the key's `rateLimitPerMinute` used up (`rate_limit_exceeded`)"),
          "502": error("The provider failed (`provider_error`)"),
          "503": error("The provider cannot be reached or its circuit is open, or the database cannot be reached"),
          "504": error("The provider did not answer in time (`provider_timeout`)")
        }
      }
    },
    [`${gatewayPrefix}/embeddings`]: {
      post: {
        tags: ["gateway"],
        summary: "Embeddings of texts or token ids (OpenAI's format)",
        description: "One vector per input, in their order: numbers, or with `encoding_format: \"base64\"` " +
          "(what OpenAI's SDKs ask for) their float32 little-endian bytes in base64. OpenAI-style providers " +
          "and Ollama embed (Ollama text only), Anthropic does not. Usage (prompt tokens) is recorded for the key.",
        security: bearer,
        requestBody: { required: true, content: jsonContent(schemaOf(EmbeddingRequest, definitions)) },
        responses: {
          "200": { description: "The vectors", content: jsonContent(schemaOf(EmbeddingList, definitions)) },
          "400": error(
            "The request does not match the schema, has an empty input or more than 2048, or the model's " +
              "provider cannot embed it (`invalid_request_error`, `param` names the field)"
          ),
          ...failures,
          "404": error("No such model (`model_not_found`)"),
          "413": error("The body is larger than `MAX_BODY_SIZE` (`request_too_large`)"),
          "429": error("A rate limit or token budget used up (`rate_limit_exceeded`)"),
          "502": error("The provider failed or sent vectors that do not match the inputs (`provider_error`)"),
          "503": error("The provider cannot be reached or its circuit is open, or the database cannot be reached"),
          "504": error("The provider did not answer in time (`provider_timeout`)")
        }
      }
    },
    [`${gatewayPrefix}/messages`]: {
      post: {
        tags: ["gateway"],
        summary: "A message (Anthropic's Messages API), streamed or not, from any model",
        description: "For Anthropic's SDKs and tools built on them (base URL `http://host`, the key as " +
          "`x-api-key`; `anthropic-version` is accepted and not needed). Any model the gateway serves, by the " +
          "names of `/v1/models`. `system`, turns with text, base64 images, `tool_use` and `tool_result` " +
          "blocks, `tools` and `tool_choice` are translated for the provider; `top_k` reaches Anthropic and " +
          "Ollama. With `stream: true` the answer is Anthropic's Server-Sent Events (`message_start`, " +
          "`content_block_start`, `content_block_delta`, `content_block_stop`, `message_delta` with the stop " +
          "reason and usage, `message_stop`, and `ping` while the model is silent); a failure after the " +
          "first event is an `error` event. Scopes, model lists, limits, budgets and usage as for chat " +
          "completions. Every failure has Anthropic's error body.",
        security: apiKeyHeader,
        requestBody: { required: true, content: jsonContent(schemaOf(MessagesRequest, definitions)) },
        responses: {
          "200": {
            description: "The message; with `stream: true`, its events as Server-Sent Events",
            content: {
              ...jsonContent(schemaOf(Message, definitions)),
              "text/event-stream": { schema: schemaOf(MessageStreamEvent, definitions) }
            }
          },
          "400": anthropicError("The request does not match the schema (`invalid_request_error`, naming the field)"),
          "401": anthropicError("No API key, or an invalid one (`authentication_error`)"),
          "403": anthropicError("The key lacks `models:use` (`permission_error`)"),
          "404": anthropicError("No such model, or not one the key may use (`not_found_error`)"),
          "413": anthropicError("The body is larger than `MAX_BODY_SIZE` (`request_too_large`)"),
          "429": anthropicError("A rate limit or token budget used up (`rate_limit_error`, with `Retry-After`)"),
          "502": anthropicError("The provider failed (`api_error`)"),
          "503": anthropicError(
            "The provider cannot be reached (`api_error`) or its circuit is open (`overloaded_error`), or the " +
              "database cannot be reached"
          ),
          "504": anthropicError("The provider did not answer in time (`api_error`)")
        }
      }
    }
  }
}

const tags = [
  { name: "realtime", description: "WebSockets: the server's events, and chat for clients without Effect" },
  { name: "rpc", description: "Effect RPC, the typed interface for TypeScript clients" },
  {
    name: "gateway",
    description: "OpenAI- and Anthropic-compatible: OpenAI's SDKs work unchanged against `http://host/v1`, " +
      "Anthropic's against `http://host`"
  }
]

/** `spec` (the REST API's document) with the routes served beside it. */
export const withRoutesBeside = (spec: Json): Json => {
  const components = (spec.components ?? {}) as Json
  const schemas = (components.schemas ?? {}) as Json
  const definitions: Json = {}
  const paths = { ...(spec.paths as Json), ...socketPaths, ...gatewayPaths(definitions) }
  const securitySchemes = (components.securitySchemes ?? {}) as Json
  return {
    ...spec,
    tags: [...((spec.tags as Array<Json> | undefined) ?? []), ...tags],
    paths,
    components: {
      ...components,
      schemas: { ...schemas, ...definitions },
      securitySchemes: {
        ...securitySchemes,
        bearer: securitySchemes.bearer ?? { type: "http", scheme: "bearer" },
        apiKey: securitySchemes.apiKey ?? { type: "apiKey", in: "header", name: "X-API-Key" }
      }
    }
  }
}
