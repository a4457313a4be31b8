/** Log output as configured: JSON lines (one object per event) or a readable format for a terminal. */
import { Effect, Layer, Logger } from "effect"
import { AppConfig } from "./Config.js"

export const LoggingLive = Layer.unwrapEffect(
  Effect.map(AppConfig, ({ logFormat, logLevel }) =>
    Layer.merge(
      logFormat === "json" ? Logger.json : Logger.pretty,
      Logger.minimumLogLevel(logLevel)
    ))
)
