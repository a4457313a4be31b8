/**
 * Authorization, applied inside the services (never only in handlers), so a
 * second transport (RPC, WebSocket) gets the same rules by calling the same
 * methods. Ownership is enforced by the repositories' queries: another user's
 * object is simply not found (404), never "forbidden".
 */
import { Effect } from "effect"
import { type Actor, CurrentActor, type Permission } from "../Domain/Actor.js"
import { Forbidden } from "../Domain/Errors.js"

/** The current actor, if it holds `permission`. */
export const requirePermission = (permission: Permission): Effect.Effect<Actor, Forbidden, CurrentActor> =>
  Effect.flatMap(CurrentActor, (actor) =>
    actor.can(permission)
      ? Effect.succeed(actor)
      : Effect.fail(new Forbidden({ message: `This requires the "${permission}" permission` })))

/** The current actor, if it signed in with a session: what touches the account itself is not for API keys. */
export const requireSession: Effect.Effect<Actor, Forbidden, CurrentActor> = Effect.flatMap(
  CurrentActor,
  (actor) =>
    actor.via === "session"
      ? Effect.succeed(actor)
      : Effect.fail(new Forbidden({ message: "This requires signing in with a password, not an API key" }))
)
