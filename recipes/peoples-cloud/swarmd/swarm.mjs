// The swarm's decisions, as pure functions of one node's view (tested on the host with
// node --test): which deployments this node pins, and which it drops. Every node ranks the
// candidates for a deployment the same way (sha256 of CID and node name), so nodes that see
// the same swarm pick the same holders without talking to each other.
import { createHash } from 'node:crypto'

export const QUERY_HOLDS = 'pc-holds'
export const EVENT_DEPLOY = 'pc-deploy'
export const EVENT_UNPIN = 'pc-unpin'

export function rank (cid, node) {
  return createHash('sha256').update(`${cid}\n${node}`).digest('hex')
}

// alive: [{name, free}]; holders: Set of node names holding `deployment` now.
// Returns the names that should add a replica, best first, at most r - holders.
export function chooseHolders (deployment, holders, alive) {
  const aliveNames = new Set(alive.map((m) => m.name))
  const current = [...holders].filter((n) => aliveNames.has(n)).length
  const needed = deployment.r - current
  if (needed <= 0) return []
  return alive
    .filter((m) => !holders.has(m.name) && m.free >= deployment.size)
    .sort((a, b) => (rank(deployment.cid, a.name) < rank(deployment.cid, b.name) ? -1 : 1))
    .slice(0, needed)
    .map((m) => m.name)
}

// view: { self, alive: [{name, free}], catalog: Map cid -> {cid, name, size, r},
//         holders: Map cid -> Set(name), mine: Set(cid), pinning: Set(cid), gone: Set(cid) }
export function decide (view) {
  const pin = []
  const unpin = []
  for (const [cid, deployment] of view.catalog) {
    if (view.gone.has(cid) || view.mine.has(cid) || view.pinning.has(cid)) continue
    const holders = view.holders.get(cid) || new Set()
    if (chooseHolders(deployment, holders, view.alive).includes(view.self)) pin.push(deployment)
  }
  for (const cid of view.mine) {
    if (view.gone.has(cid)) unpin.push(cid)
  }
  return { pin, unpin }
}

// A node's answer to QUERY_HOLDS: what it holds (with what it knows of each) and what was
// unpinned, as compact JSON; trimmed to `limit` bytes (Serf's query_response_size_limit).
export function holdingsPayload (node, mine, gone, limit = 8000) {
  const held = [...mine.values()].map((d) => [d.cid, d.size, d.r, d.name.slice(0, 64)])
  const payload = { n: node, h: held, g: [...gone] }
  let text = JSON.stringify(payload)
  while (text.length > limit && (payload.g.length || payload.h.length)) {
    if (payload.g.length) payload.g.shift()
    else payload.h.pop()
    payload.t = true // truncated: the swarm sees fewer holdings of this node than it has
    text = JSON.stringify(payload)
  }
  return text
}

// Merge QUERY_HOLDS answers into holders and the catalog; returns the holders map.
export function mergeHoldings (answers, catalog, gone) {
  const holders = new Map()
  for (const answer of answers) {
    let data
    try { data = JSON.parse(answer.payload) } catch { continue }
    if (!data || typeof data.n !== 'string' || !Array.isArray(data.h)) continue
    for (const cid of data.g || []) gone.add(cid)
    for (const [cid, size, r, name] of data.h) {
      if (typeof cid !== 'string') continue
      if (!catalog.has(cid)) catalog.set(cid, { cid, size: Number(size) || 0, r: Number(r) || 1, name: String(name || cid) })
      if (!holders.has(cid)) holders.set(cid, new Set())
      holders.get(cid).add(data.n)
    }
  }
  return holders
}

// The deployments as users see them: every known one with its holders among alive nodes.
export function deploymentList (catalog, holders, gone, aliveNames) {
  return [...catalog.values()]
    .filter((d) => !gone.has(d.cid))
    .map((d) => {
      const names = [...(holders.get(d.cid) || [])].filter((n) => aliveNames.has(n)).sort()
      return { cid: d.cid, name: d.name, size: d.size, r: d.r, holders: names, replicas: names.length }
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
}
