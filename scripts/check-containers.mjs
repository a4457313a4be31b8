#!/usr/bin/env node
// Static checks for the container setup (no Docker engine needed).
//
//   node scripts/check-containers.mjs [Dockerfile] [docker-compose.yml]
//
// Paths default to the files at the repository root. Exits 1 with one line per
// problem, or prints a one-line summary and exits 0.
//
// Uses only node: builtins plus a YAML parser already in node_modules
// (js-yaml, present via eslint; `yaml` is used instead if installed).

import { readFileSync } from "node:fs"
import { dirname, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const dockerfilePath = resolve(process.argv[2] ?? resolve(root, "Dockerfile"))
const composePath = resolve(process.argv[3] ?? resolve(root, "docker-compose.yml"))

const failures = []
const shown = (file) => {
  const rel = relative(process.cwd(), file)
  return rel && !rel.startsWith("..") ? rel : file
}
const fail = (file, msg) => failures.push(`${shown(file)}: ${msg}`)

const SECRET_KEY = /SECRET|PASSWORD|KEY/i
// A value that comes only from the environment: ${VAR}, ${VAR:?msg} or ${VAR?msg}, or ${VAR:-} for an
// optional secret (empty: unset, which the server reads as not configured).
// Other defaults (${VAR:-x}, ${VAR-x}) are rejected for secrets: the default is a literal.
const SECRET_INTERPOLATION = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}$/

// ---------------------------------------------------------------- Dockerfile

/** Split a Dockerfile into logical instructions (continuations joined, comments dropped). */
function parseDockerfile(text) {
  const lines = text.split(/\r?\n/)
  const escapeDirective = /^#\s*escape\s*=\s*(\S)/i
  let escape = "\\"
  for (const line of lines) {
    if (!/^#\s*\w+\s*=/.test(line)) break // parser directives only at the very top
    const m = escapeDirective.exec(line)
    if (m) escape = m[1]
  }
  const instructions = []
  let buf = null
  let startLine = 0
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]
    const trimmed = raw.trim()
    if (trimmed.startsWith("#")) continue // comments, also inside continuations
    if (buf === null) {
      if (trimmed === "") continue
      buf = ""
      startLine = i + 1
    }
    if (trimmed.endsWith(escape)) {
      buf += trimmed.slice(0, -1) + " "
      continue
    }
    buf += trimmed
    const m = /^(\S+)\s*([\s\S]*)$/.exec(buf)
    instructions.push({ line: startLine, op: m[1].toUpperCase(), args: m[2].trim() })
    buf = null
  }
  if (buf !== null) {
    const m = /^(\S+)\s*([\s\S]*)$/.exec(buf)
    instructions.push({ line: startLine, op: m[1].toUpperCase(), args: m[2].trim() })
  }
  return instructions
}

/** Leading --flag[=value] options of an instruction. */
function flagsOf(args) {
  const flags = {}
  let rest = args
  for (;;) {
    const m = /^--([\w-]+)(?:=(\S*))?\s*/.exec(rest)
    if (!m) break
    flags[m[1].toLowerCase()] = m[2] ?? true
    rest = rest.slice(m[0].length)
  }
  return { flags, rest }
}

function readOrFail(file) {
  try {
    return readFileSync(file, "utf8")
  } catch (e) {
    fail(file, `cannot read: ${e.message}`)
    return null
  }
}

function checkDockerfile(file) {
  const text = readOrFail(file)
  if (text === null) return null
  const instructions = parseDockerfile(text)
  const stages = []
  for (const ins of instructions) {
    if (ins.op === "FROM") {
      const { rest } = flagsOf(ins.args)
      const m = /^(\S+)(?:\s+AS\s+(\S+))?\s*$/i.exec(rest)
      if (!m) {
        fail(file, `line ${ins.line}: cannot parse FROM "${ins.args}"`)
        continue
      }
      stages.push({ index: stages.length, image: m[1], name: m[2]?.toLowerCase() ?? null, line: ins.line, body: [] })
    } else if (stages.length === 0) {
      if (ins.op !== "ARG") fail(file, `line ${ins.line}: ${ins.op} before the first FROM`)
    } else {
      stages.at(-1).body.push(ins)
    }
  }

  if (stages.length < 2) {
    fail(file, `expected a multi-stage build (>= 2 FROM stages), found ${stages.length}`)
  }
  if (stages.length === 0) return null

  // Stage names must be unique; COPY --from must reference an earlier stage.
  const seen = new Map()
  for (const stage of stages) {
    if (stage.name) {
      if (seen.has(stage.name)) fail(file, `line ${stage.line}: duplicate stage name "${stage.name}"`)
      seen.set(stage.name, stage.index)
    }
  }
  let copyFromCount = 0
  for (const stage of stages) {
    for (const ins of stage.body) {
      if (ins.op !== "COPY" && ins.op !== "ADD") continue
      const { flags } = flagsOf(ins.args)
      if (!("from" in flags)) continue
      copyFromCount++
      const ref = String(flags.from).toLowerCase()
      const target = /^\d+$/.test(ref) ? Number(ref) : seen.get(ref)
      if (target === undefined || target >= stages.length) {
        fail(file, `line ${ins.line}: ${ins.op} --from=${flags.from} does not name a stage of this Dockerfile`)
      } else if (target >= stage.index) {
        fail(file, `line ${ins.line}: ${ins.op} --from=${flags.from} refers to the same or a later stage`)
      }
    }
  }

  // Final stage requirements.
  const final = stages.at(-1)
  const label = final.name ? `final stage "${final.name}"` : "final stage"
  const last = (op) => final.body.filter((i) => i.op === op).at(-1)

  const user = last("USER")
  if (!user) {
    fail(file, `${label} has no USER instruction (it would run as root)`)
  } else {
    const who = user.args.split(":")[0].trim()
    if (who === "root" || who === "0") fail(file, `line ${user.line}: ${label} runs as root (USER ${user.args})`)
  }

  const health = last("HEALTHCHECK")
  if (!health) fail(file, `${label} has no HEALTHCHECK`)
  else if (/^NONE$/i.test(flagsOf(health.args).rest)) fail(file, `line ${health.line}: HEALTHCHECK NONE in ${label}`)
  else if (!/^CMD\b/i.test(flagsOf(health.args).rest)) {
    fail(file, `line ${health.line}: HEALTHCHECK must be "HEALTHCHECK [options] CMD ..."`)
  }

  const exposes = final.body.filter((i) => i.op === "EXPOSE")
  if (exposes.length === 0) fail(file, `${label} has no EXPOSE`)

  const cmd = last("CMD")
  if (!cmd) fail(file, `${label} has no CMD`)

  // No dependency installation that could pull devDependencies into the final image.
  const install = /\b(?:npm\s+(?:install|i|ci|add)|yarn(?:\s+install)?|pnpm\s+(?:install|i|add))\b/
  const prodOnly = /--omit[= ]dev\b|--production\b|--only[= ]prod(?:uction)?\b|--prod\b/
  for (const ins of final.body) {
    if (ins.op !== "RUN") continue
    for (const part of ins.args.split(/&&|;|\|\|/)) {
      if (install.test(part) && !prodOnly.test(part)) {
        fail(file, `line ${ins.line}: ${label} installs packages without --omit=dev: "${part.trim()}"`)
      }
    }
  }

  // No secrets baked into the image.
  for (const stage of stages) {
    for (const ins of stage.body) {
      if (ins.op !== "ENV" && ins.op !== "ARG") continue
      const pairs = /=/.test(ins.args)
        ? [...ins.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|'[^']*'|\S*)/g)].map((m) => [m[1], m[2]])
        : ins.op === "ENV"
        ? [[ins.args.split(/\s+/)[0], ins.args.split(/\s+/).slice(1).join(" ")]]
        : []
      for (const [key, value] of pairs) {
        if (SECRET_KEY.test(key) && value.replace(/^["']|["']$/g, "") !== "") {
          fail(file, `line ${ins.line}: ${ins.op} ${key} bakes a secret-looking value into the image`)
        }
      }
    }
  }

  return {
    stages: stages.length,
    copyFrom: copyFromCount,
    user: user?.args,
    expose: exposes.map((e) => e.args).join(" "),
    finalName: final.name ?? String(final.index)
  }
}

// ------------------------------------------------------------ docker-compose

async function loadYamlParser() {
  try {
    const m = await import("yaml")
    return (text) => m.parse(text, { uniqueKeys: true })
  } catch {}
  try {
    const m = await import("js-yaml")
    return (text) => (m.load ?? m.default.load)(text)
  } catch {}
  return null
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v)

function hasHealthcheck(service) {
  const hc = service?.healthcheck
  if (!isObject(hc) || hc.disable === true) return false
  const test = hc.test
  if (Array.isArray(test)) return test.length > 0 && String(test[0]).toUpperCase() !== "NONE"
  return typeof test === "string" && test.trim() !== ""
}

/** Environment as [key, value|undefined] pairs, from either map or list syntax. */
function envPairs(env) {
  if (Array.isArray(env)) {
    return env.map((entry) => {
      const s = String(entry)
      const i = s.indexOf("=")
      return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)]
    })
  }
  if (isObject(env)) return Object.entries(env).map(([k, v]) => [k, v === null ? undefined : String(v)])
  return []
}

/** Named volume referenced by a service volume entry, or null for bind mounts/anonymous volumes. */
function namedVolume(entry) {
  if (typeof entry === "string") {
    const parts = entry.split(":")
    if (parts.length < 2) return null // anonymous volume
    const src = parts[0]
    if (src === "" || /^[./~$]/.test(src) || src.includes("/") || /^[A-Za-z]$/.test(src)) return null
    return src
  }
  if (isObject(entry)) {
    if ((entry.type ?? "volume") === "volume" && typeof entry.source === "string" && entry.source !== "") {
      return entry.source
    }
  }
  return null
}

async function checkCompose(file) {
  const text = readOrFail(file)
  if (text === null) return null
  const parse = await loadYamlParser()
  if (!parse) {
    fail(file, "no YAML parser available (expected js-yaml or yaml in node_modules; run npm ci)")
    return null
  }
  let doc
  try {
    doc = parse(text)
  } catch (e) {
    fail(file, `does not parse as YAML: ${String(e.message).split("\n")[0]}`)
    return null
  }
  if (!isObject(doc) || !isObject(doc.services) || Object.keys(doc.services).length === 0) {
    fail(file, "no services defined")
    return null
  }
  const services = doc.services
  const declaredVolumes = new Set(isObject(doc.volumes) ? Object.keys(doc.volumes) : [])
  const usedVolumes = new Set()
  let edges = 0
  let healthchecks = 0

  for (const [name, svc] of Object.entries(services)) {
    if (!isObject(svc)) {
      fail(file, `service "${name}" is not a mapping`)
      continue
    }
    if (!svc.image && !svc.build) fail(file, `service "${name}" has neither image nor build`)

    // Healthcheck on every service.
    if (hasHealthcheck(svc)) healthchecks++
    else fail(file, `service "${name}" has no healthcheck`)

    // depends_on.
    const deps = svc.depends_on
    const depEntries = Array.isArray(deps)
      ? deps.map((d) => [String(d), {}])
      : isObject(deps)
      ? Object.entries(deps).map(([d, v]) => [d, isObject(v) ? v : {}])
      : []
    if (deps !== undefined && !Array.isArray(deps) && !isObject(deps)) {
      fail(file, `service "${name}": depends_on must be a list or a mapping`)
    }
    for (const [dep, opts] of depEntries) {
      edges++
      const target = services[dep]
      if (!target) {
        fail(file, `service "${name}" depends_on unknown service "${dep}"`)
        continue
      }
      if (dep === name) fail(file, `service "${name}" depends on itself`)
      if (hasHealthcheck(target) && opts.condition !== "service_healthy") {
        fail(file, `service "${name}" depends_on "${dep}" without condition: service_healthy (it has a healthcheck)`)
      }
      const depProfiles = Array.isArray(target.profiles) ? target.profiles : []
      const ownProfiles = Array.isArray(svc.profiles) ? svc.profiles : []
      if (depProfiles.length > 0 && opts.required !== false && !depProfiles.some((p) => ownProfiles.includes(p))) {
        fail(
          file,
          `service "${name}" hard-depends on "${dep}", which only runs under profile(s) ${depProfiles.join(", ")}`
        )
      }
    }

    // Named volumes.
    for (const entry of Array.isArray(svc.volumes) ? svc.volumes : []) {
      const vol = namedVolume(entry)
      if (vol === null) continue
      usedVolumes.add(vol)
      if (!declaredVolumes.has(vol)) {
        fail(file, `service "${name}" uses volume "${vol}", which is not declared under top-level volumes`)
      }
    }

    // No literal secrets, in any service.
    for (const [key, value] of envPairs(svc.environment)) {
      if (value === undefined) continue // passed through from the host environment
      if (SECRET_KEY.test(key) && !SECRET_INTERPOLATION.test(value.trim())) {
        fail(
          file,
          `service "${name}": ${key} must be an interpolation like \${${key}:?message}, not a literal or a default`
        )
      }
      const cred = /:\/\/[^:/@\s]*:([^@\s]*)@/.exec(value)
      if (cred && !SECRET_INTERPOLATION.test(cred[1])) {
        fail(file, `service "${name}": ${key} embeds a literal password in a URL; use \${VAR:?message}`)
      }
    }
  }

  if (!services.server) fail(file, `no "server" service`)
  if (!services.ollama) {
    fail(file, `no "ollama" service`)
  } else if (!Array.isArray(services.ollama.profiles) || services.ollama.profiles.length === 0) {
    fail(file, `service "ollama" must be optional: put it under a profile (profiles: ["ollama"])`)
  }

  return {
    services: Object.keys(services).length,
    edges,
    healthchecks,
    volumes: usedVolumes.size,
    unusedVolumes: [...declaredVolumes].filter((v) => !usedVolumes.has(v))
  }
}

// ------------------------------------------------------------------------ main

const df = checkDockerfile(dockerfilePath)
const dc = await checkCompose(composePath)

if (failures.length > 0) {
  console.error(`check-containers: ${failures.length} problem(s):`)
  for (const f of failures) console.error(`  - ${f}`)
  process.exit(1)
}

const note = dc.unusedVolumes.length ? ` (declared but unused: ${dc.unusedVolumes.join(", ")})` : ""
console.log(
  `check-containers: OK — Dockerfile: ${df.stages} stages, ${df.copyFrom} COPY --from resolved, final "${df.finalName}" has USER ${df.user}, HEALTHCHECK, EXPOSE ${df.expose}, CMD, no dev install, no baked secrets; ` +
    `compose: ${dc.services} services, ${dc.healthchecks} healthchecks, ${dc.edges} depends_on edges valid, ${dc.volumes} named volumes declared${note}, ollama profiled, no literal secrets`
)
