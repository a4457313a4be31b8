/**
 * The Node HTTP server, with a bounded graceful shutdown: when the server's
 * scope closes it stops accepting, lets in-flight requests finish for up to
 * `SHUTDOWN_TIMEOUT`, then cuts what is left, so the database pool (released
 * after it) is never closed under a running request.
 */
import { HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Duration, Effect, Layer } from "effect"
import * as Http from "node:http"
import { AppConfig } from "../Config.js"

/**
 * A request body abandoned before its end (the body limit was crossed while
 * reading) must still get its answer. Node's default is to destroy the whole
 * socket with the request; instead reading stops, the answer is written, and
 * the connection is closed after it (it cannot be reused mid-body).
 */
const responses = new WeakMap<Http.IncomingMessage, Http.ServerResponse>()

class AnswerableIncomingMessage extends Http.IncomingMessage {
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const response = responses.get(this)
    const socket = this.socket
    if (this.complete || response === undefined || response.writableEnded || socket.destroyed) {
      return super._destroy(error, callback)
    }
    socket.pause()
    response.shouldKeepAlive = false
    callback(error)
  }
}

class NodeServer extends Context.Tag("Http/NodeServer")<NodeServer, Http.Server>() {}

const drainOnShutdown = Layer.scopedDiscard(
  Effect.gen(function*() {
    const server = yield* NodeServer
    const { shutdownTimeout } = yield* AppConfig
    yield* Effect.addFinalizer(() =>
      Effect.logInfo("Shutting down: draining in-flight requests").pipe(
        Effect.zipRight(Effect.async<void>((resume) => {
          if (!server.listening) return resume(Effect.void)
          const deadline = setTimeout(() => server.closeAllConnections(), Duration.toMillis(shutdownTimeout))
          server.close(() => {
            clearTimeout(deadline)
            resume(Effect.void)
          })
          server.closeIdleConnections()
        })),
        Effect.zipRight(Effect.logInfo("HTTP server stopped"))
      )
    )
  })
)

/** Listens on `HOST:PORT` and provides `HttpServer`. */
export const HttpServerLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const { host, port } = yield* AppConfig
    const server = Http.createServer({ keepAliveTimeout: 5_000, IncomingMessage: AnswerableIncomingMessage })
    server.prependListener("request", (request, response) => responses.set(request, response))
    // A burst of new connections (a thousand clients reconnecting at once) waits in the listen queue
    // instead of being refused at Node's default of 511; the kernel caps it at `net.core.somaxconn`.
    const listening = HttpServer.withLogAddress(NodeHttpServer.layer(() => server, { host, port, backlog: 4096 }))
    // Built after the listener, so released before it: draining starts first.
    return drainOnShutdown.pipe(
      Layer.provideMerge(listening),
      Layer.provide(Layer.succeed(NodeServer, server))
    )
  })
)
