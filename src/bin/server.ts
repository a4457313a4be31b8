import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { environment } from "../Config.js"
import { describeStartupFailure, ServerLive } from "../Server.js"

Layer.launch(ServerLive).pipe(
  Effect.withConfigProvider(environment()),
  Effect.tapErrorCause((cause) => Effect.sync(() => process.stderr.write(`${describeStartupFailure(cause)}\n`))),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
