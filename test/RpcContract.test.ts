/**
 * `src/Rpc/Api.ts` is what a client app imports: its module graph must hold
 * schemas only, never server code (services, repositories, the database
 * drivers, Node's own modules). Read statically, as a bundler would follow it.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")

/** The modules a file loads at run time (type-only imports are erased). */
const runtimeImports = (file: string): ReadonlyArray<string> => {
  const source = Fs.readFileSync(file, "utf8")
  const specifiers: Array<string> = []
  for (const match of source.matchAll(/^(?:import|export)\s+(type\s+)?([^"';]*?)\s*from\s*"([^"]+)"/gm)) {
    const [, typeOnly, clause = "", specifier = ""] = match
    if (typeOnly) continue
    // `import { type A, type B } from …` loads nothing either.
    const names = /^\{([^}]*)\}$/.exec(clause.trim())?.[1]
    if (names !== undefined && names.split(",").every((name) => name.trim() === "" || /^type\s/.test(name.trim()))) {
      continue
    }
    specifiers.push(specifier)
  }
  for (const match of source.matchAll(/^import\s+"([^"]+)"/gm)) specifiers.push(match[1]!)
  return specifiers
}

const moduleGraph = (entry: string) => {
  const files = new Set<string>()
  const packages = new Set<string>()
  const visit = (file: string) => {
    if (files.has(file)) return
    files.add(file)
    for (const specifier of runtimeImports(file)) {
      if (specifier.startsWith(".")) visit(Path.resolve(Path.dirname(file), specifier.replace(/\.js$/, ".ts")))
      else {packages.add(
          specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!
        )}
    }
  }
  visit(entry)
  return { files: [...files].map((file) => Path.relative(root, file)).sort(), packages: [...packages].sort() }
}

describe("the RPC contract module", () => {
  it("loads schemas only: no database driver, no Node module, no service or repository", () => {
    const { files, packages } = moduleGraph(Path.join(root, "src/Rpc/Api.ts"))
    // The row schemas of `src/Domain` are `@effect/sql` `Model` classes (built on `@effect/experimental`'s
    // `VariantSchema`); ids are UUIDv7 (`uuid`). None of these reaches a driver or a Node module.
    expect(packages).toEqual([
      "@effect/experimental",
      "@effect/platform",
      "@effect/rpc",
      "@effect/sql",
      "effect",
      "uuid"
    ])
    const serverSide = files.filter((file) =>
      !/^src\/(Domain\/[^/]+|[A-Za-z]+\/Api|Rpc\/Api|Models\/Errors|Gateway\/Schemas)\.ts$/.test(file)
    )
    expect(serverSide).toEqual([])
    expect(files).toContain("src/Chat/Api.ts")
  })
})
