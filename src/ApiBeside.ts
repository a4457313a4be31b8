/**
 * The routes served beside the REST API's `HttpApi`: the WebSockets (server
 * events, chat), Effect RPC and the OpenAI-compatible gateway. Their paths are
 * part of the contract (clients need them), and the OpenAPI document describes
 * them too, so that `/docs` lists every way in: the gateway's bodies from the
 * schemas the gateway itself decodes and encodes; the sockets' protocols in
 * words (OpenAPI has no way to describe a WebSocket's messages).
 */
import { JSONSchema, type Schema } from "effect"
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

/** The path prefix OpenAI's clients put after their base URL (`http://host/v1`). */
export const gatewayPrefix = "/v1"

type Json = Record<string, unknown>

const bearer = [{ bearer: [] }]

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

const gatewayPaths = (definitions: Json): Json => {
  const error = gatewayError(definitions)
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
    }
  }
}

const tags = [
  { name: "realtime", description: "WebSockets: the server's events, and chat for clients without Effect" },
  { name: "rpc", description: "Effect RPC, the typed interface for TypeScript clients" },
  { name: "gateway", description: "OpenAI-compatible: OpenAI's SDKs work unchanged against `http://host/v1`" }
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
      securitySchemes: { ...securitySchemes, bearer: securitySchemes.bearer ?? { type: "http", scheme: "bearer" } }
    }
  }
}
