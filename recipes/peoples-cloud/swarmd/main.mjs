// swarmd: the People's Cloud daemon. Joins the swarm through Serf (RPC, never event-handler
// scripts: the appliance has no shell), announces deployments with Serf user events, asks
// who holds what with a Serf query, and pins through the local IPFS node until each
// deployment has R holders. Usage: node main.mjs /etc/peoples-cloud/swarmd.json
import { readFileSync } from 'node:fs'
import { SerfClient } from './serf.mjs'
import { IpfsClient } from './ipfs.mjs'
import { NodeState } from './state.mjs'
import { startApi } from './api.mjs'
import {
  QUERY_HOLDS, EVENT_DEPLOY, EVENT_UNPIN,
  decide, holdingsPayload, mergeHoldings, deploymentList
} from './swarm.mjs'

const RECONCILE_EVERY_MS = 10000
const JOIN_EVERY_MS = 5000
const QUERY_TIMEOUT_MS = 2500
const SWARM_PORT = 4002

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const log = (...args) => console.log('swarmd:', ...args)

class Daemon {
  constructor (config) {
    this.config = config
    this.name = config.node_name // Serf's own name replaces it once connected
    this.encrypted = null // unknown until Serf answers
    this.quota = config.quota_mib * 1024 * 1024
    this.state = new NodeState(config.state_dir)
    this.ipfs = new IpfsClient({ port: config.ipfs_api_port })
    this.serf = null
    this.peerId = ''
    this.pinning = new Set()
    this.holders = new Map()
    this.lastRefresh = 0
    this.refreshing = null
    this.timer = null
  }

  free () { return Math.max(0, this.quota - this.state.used()) }

  async start () {
    startApi(this, { port: this.config.api_port, token: this.config.user_token })
    log(`${this.name}: API on port ${this.config.api_port}, swarm ${this.config.swarm}`)
    this.connectSerf()
    this.waitForIpfs()
    setInterval(() => this.schedule(0), RECONCILE_EVERY_MS)
    setInterval(() => this.joinIfAlone(), JOIN_EVERY_MS)
  }

  async connectSerf () {
    for (;;) {
      try {
        const serf = new SerfClient({ port: this.config.serf_rpc_port })
        await serf.connect()
        serf.onclose = () => { this.serf = null; log('serf RPC closed; reconnecting'); this.connectSerf() }
        const stats = await serf.request('stats')
        this.name = stats.agent.name
        this.encrypted = stats.serf.encrypted === 'true'
        if (!this.encrypted) {
          // fail closed: without the swarm's key anyone on the network could join
          log('Serf runs without an encryption key (serf_key unset): not taking part')
          serf.close()
          return
        }
        await serf.stream('member-join,member-leave,member-failed,member-update,member-reap,user,query', (e) => this.onEvent(e))
        this.serf = serf
        await this.publishTags()
        log('serf RPC connected')
        await this.joinIfAlone()
        return
      } catch (err) {
        await sleep(1000)
      }
    }
  }

  async waitForIpfs () {
    for (;;) {
      try {
        const id = await this.ipfs.id()
        this.peerId = id.ID || id.id
        log(`ipfs ${this.peerId} ready`)
        await this.checkPins()
        await this.publishTags()
        this.schedule(0)
        return
      } catch {
        await sleep(1000)
      }
    }
  }

  // A deployment this node remembers but whose pin is gone (a repo lost) is not held.
  async checkPins () {
    const pins = new Set(await this.ipfs.pins())
    for (const cid of [...this.state.mine.keys()]) {
      if (!pins.has(cid)) { this.state.mine.delete(cid); this.state.save() }
    }
  }

  async publishTags () {
    if (!this.serf) return
    const tags = { swarm: this.config.swarm, free: String(this.free()), api: String(this.config.api_port) }
    if (this.peerId) tags.ipfs = this.peerId
    await this.serf.tags(tags).catch((err) => log(`tags: ${err.message}`))
  }

  async joinIfAlone () {
    const addresses = this.config.join.split(',').map((a) => a.trim()).filter(Boolean)
      .map((a) => (a.includes(':') ? a : `${a}:7946`))
    if (!this.serf || addresses.length === 0) return
    try {
      const alive = (await this.serf.members()).filter((m) => m.status === 'alive')
      if (alive.length > 1) return
      const result = await this.serf.join(addresses, false)
      log(`joined through ${result.Num} of ${addresses.join(', ')}`)
      this.schedule(500)
    } catch (err) {
      log(`join ${addresses.join(', ')}: ${err.message}`)
    }
  }

  onEvent (event) {
    if (event.Event === 'query' && event.Name === QUERY_HOLDS) {
      const payload = holdingsPayload(this.name, this.state.mine, this.state.gone, this.config.response_limit)
      this.serf.respond(event.ID, payload).catch(() => {})
      return
    }
    if (event.Event === 'user' && event.Name === EVENT_DEPLOY) {
      try {
        const d = JSON.parse(event.Payload)
        if (!this.state.catalog.has(d.cid) && !this.state.gone.has(d.cid)) {
          this.state.catalog.set(d.cid, { cid: d.cid, name: String(d.name), size: Number(d.size), r: Number(d.r) })
          this.state.save()
        }
      } catch {}
      this.schedule(0)
      return
    }
    if (event.Event === 'user' && event.Name === EVENT_UNPIN) {
      this.dropLocally(String(event.Payload)).catch((err) => log(`unpin: ${err.message}`))
      return
    }
    if (String(event.Event || '').startsWith('member-')) {
      for (const m of event.Members || []) log(`${event.Event} ${m.name} ${m.address}`)
      this.schedule(event.Event === 'member-join' ? 1000 : 0)
    }
  }

  schedule (delayMs) {
    if (this.timer) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.reconcile().catch((err) => log(`reconcile: ${err.message}`))
    }, delayMs)
  }

  async alive () {
    if (!this.serf) return []
    const members = await this.serf.members()
    return members.filter((m) => m.status === 'alive' && m.tags.swarm === this.config.swarm)
  }

  // Ask the swarm who holds what (at most one query at a time; answers reused for 1 s).
  async refresh () {
    if (this.refreshing) return this.refreshing
    if (Date.now() - this.lastRefresh < 1000) return this.holders
    this.refreshing = (async () => {
      const answers = await this.serf.query(QUERY_HOLDS, '', { timeoutMs: QUERY_TIMEOUT_MS })
      answers.push({ from: this.name, payload: holdingsPayload(this.name, this.state.mine, this.state.gone, 1e9) })
      const catalogSize = this.state.catalog.size
      this.holders = mergeHoldings(answers, this.state.catalog, this.state.gone)
      if (this.state.catalog.size !== catalogSize) this.state.save()
      this.lastRefresh = Date.now()
      return this.holders
    })()
    try { return await this.refreshing } finally { this.refreshing = null }
  }

  async reconcile () {
    if (!this.serf || !this.peerId) return
    const alive = await this.alive()
    await this.connectPeers(alive)
    await this.refresh()
    const plan = decide({
      self: this.name,
      alive: alive.map((m) => ({ name: m.name, free: m.name === this.name ? this.free() : Number(m.tags.free || 0) })),
      catalog: this.state.catalog,
      holders: this.holders,
      mine: new Set(this.state.mine.keys()),
      pinning: this.pinning,
      gone: this.state.gone
    })
    for (const cid of plan.unpin) await this.dropLocally(cid)
    for (const deployment of plan.pin) this.pinInBackground(deployment)
  }

  async connectPeers (alive) {
    for (const m of alive) {
      if (m.name === this.name || !m.tags.ipfs || !m.address) continue
      await this.ipfs.connect(`/ip4/${m.address}/tcp/${SWARM_PORT}/p2p/${m.tags.ipfs}`).catch(() => {})
    }
  }

  pinInBackground (deployment) {
    this.pinning.add(deployment.cid)
    log(`pinning ${deployment.cid} (${deployment.name}, ${deployment.size} bytes)`)
    const started = Date.now()
    this.ipfs.pin(deployment.cid, 600000)
      .then(async () => {
        if (this.state.gone.has(deployment.cid)) { await this.ipfs.unpin(deployment.cid).catch(() => {}); return }
        this.state.hold(deployment)
        log(`holding ${deployment.cid} after ${Date.now() - started} ms`)
        this.lastRefresh = 0
        await this.publishTags()
      })
      .catch((err) => log(`pin ${deployment.cid}: ${err.message}`))
      .finally(() => { this.pinning.delete(deployment.cid); this.schedule(500) })
  }

  async dropLocally (cid) {
    const held = this.state.mine.has(cid)
    this.state.remove(cid)
    if (held) {
      await this.ipfs.unpin(cid).catch(() => {})
      await this.ipfs.gc().catch(() => {})
      log(`unpinned ${cid}`)
    }
    this.holders.delete(cid)
    await this.publishTags()
    return held
  }

  // POST /v1/deployments: the multipart body goes to the local node's add (pinned here).
  async deploy (body, contentType, name) {
    if (!this.peerId) { body.resume(); return { status: 503, body: { error: 'IPFS is not ready yet' } } }
    const added = await this.ipfs.call('add', {
      'cid-version': 1, pin: true, progress: false, 'wrap-with-directory': false
    }, { body, headers: { 'Content-Type': contentType }, timeoutMs: 600000 })
    const entries = [].concat(added)
    const root = entries[entries.length - 1]
    const size = Number(root.Size) || 0
    const deployment = { cid: root.Hash, name: name || root.Name || root.Hash, size, r: this.config.replication }
    if (size > this.free() && !this.state.mine.has(deployment.cid)) {
      await this.ipfs.unpin(deployment.cid).catch(() => {})
      return { status: 507, body: { error: `${size} bytes do not fit this node's free quota (${this.free()} bytes)` } }
    }
    this.state.hold(deployment)
    await this.publishTags()
    await this.serf.event(EVENT_DEPLOY, JSON.stringify(deployment))
    this.lastRefresh = 0
    this.schedule(0)
    log(`deployed ${deployment.cid} (${deployment.name}, ${size} bytes, R=${deployment.r})`)
    return { status: 201, body: { ...deployment, files: entries.length } }
  }

  async unpinEverywhere (cid) {
    const known = this.state.catalog.has(cid) || this.state.mine.has(cid)
    await this.serf.event(EVENT_UNPIN, cid)
    await this.dropLocally(cid)
    return { cid, unpinned: true, known }
  }

  async memberList () {
    if (!this.serf) return []
    return (await this.serf.members())
      .filter((m) => m.tags.swarm === this.config.swarm || m.name === this.name)
      .map((m) => ({ name: m.name, address: m.address, status: m.status, free: Number(m.tags.free || 0), ipfs: m.tags.ipfs || '' }))
      .sort((a, b) => (a.name < b.name ? -1 : 1))
  }

  async deployments () {
    if (this.serf) await this.refresh()
    const alive = new Set((await this.alive()).map((m) => m.name))
    return deploymentList(this.state.catalog, this.holders, this.state.gone, alive)
  }

  async status () {
    const members = await this.memberList()
    return {
      node: this.name,
      swarm: this.config.swarm,
      ipfs: this.peerId,
      serf: this.serf ? 'connected' : this.encrypted === false ? 'not encrypted' : 'connecting',
      quota: this.quota,
      used: this.state.used(),
      free: this.free(),
      replication: this.config.replication,
      alive: members.filter((m) => m.status === 'alive').length,
      members: members.length,
      holding: this.state.mine.size
    }
  }
}

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'))
new Daemon(config).start()
