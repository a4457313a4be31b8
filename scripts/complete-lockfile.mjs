// Records in package-lock.json the optional platform packages npm left out.
//
// npm writes only the optional dependencies it could resolve from the registry
// it used; when that registry lacks some platform builds (darwin, win32, …),
// `npm ci` later refuses the lockfile as "out of sync" ("Missing: x@ from lock
// file"). Recording those entries as optional lets `npm ci` accept the lockfile
// and skip them, as it skips any optional package it cannot install.
//
//   node scripts/complete-lockfile.mjs          complete the lockfile in place
//   node scripts/complete-lockfile.mjs --check  exit 1 if entries are missing
import fs from "node:fs"

const file = new URL("../package-lock.json", import.meta.url)
const lock = JSON.parse(fs.readFileSync(file, "utf8"))
const packages = lock.packages
const missing = []
for (const [path, entry] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const nested = `${path}/node_modules/${name}`
    const hoisted = `node_modules/${name}`
    if (packages[nested] || packages[hoisted]) continue
    missing.push([hoisted, { version, ...(entry.dev ? { dev: true } : {}), optional: true }])
  }
}
if (process.argv.includes("--check")) {
  if (missing.length > 0) {
    console.error(`package-lock.json lacks ${missing.length} optional entries; run: npm run lock`)
    process.exit(1)
  }
  console.log("package-lock.json: complete")
} else {
  for (const [key, entry] of missing) packages[key] = entry
  lock.packages = Object.fromEntries(
    Object.entries(packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1))
  )
  fs.writeFileSync(file, JSON.stringify(lock, null, 2) + "\n")
  console.log(`package-lock.json: recorded ${missing.length} optional entries`)
}
