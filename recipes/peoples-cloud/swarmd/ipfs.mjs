// The local IPFS node's HTTP RPC API (127.0.0.1 only: it can write). Every call is a POST,
// as kubo and js-ipfs require.
import http from 'node:http'

export class IpfsClient {
  constructor ({ host = '127.0.0.1', port = 5001 } = {}) {
    this.host = host
    this.port = port
  }

  // POST /api/v0/PATH?args; resolves with the body parsed as JSON (or NDJSON lines).
  call (path, args = {}, { body, headers = {}, timeoutMs = 120000 } = {}) {
    const query = new URLSearchParams()
    for (const [key, value] of Object.entries(args)) {
      for (const item of [].concat(value)) query.append(key, String(item))
    }
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: this.host,
        port: this.port,
        method: 'POST',
        path: `/api/v0/${path}?${query}`,
        headers,
        timeout: timeoutMs
      }, (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString()
          if (res.statusCode !== 200) {
            let message = text
            try { message = JSON.parse(text).Message || text } catch {}
            reject(new Error(`ipfs ${path}: ${res.statusCode} ${message}`.trim()))
            return
          }
          resolve(parseJsonLines(text))
        })
        res.on('error', reject)
      })
      req.on('timeout', () => req.destroy(new Error(`ipfs ${path}: timed out`)))
      req.on('error', reject)
      if (body && typeof body.pipe === 'function') body.pipe(req)
      else req.end(body)
    })
  }

  async id () { return this.call('id') }

  async pins () {
    const out = await this.call('pin/ls', { type: 'recursive' })
    return Object.keys((Array.isArray(out) ? Object.assign({}, ...out.map(o => o.Keys || {})) : out.Keys) || {})
  }

  pin (cid, timeoutMs) { return this.call('pin/add', { arg: cid, recursive: true }, { timeoutMs }) }
  unpin (cid) { return this.call('pin/rm', { arg: cid }) }
  gc () { return this.call('repo/gc', {}, { timeoutMs: 300000 }) }
  connect (address) { return this.call('swarm/connect', { arg: address }, { timeoutMs: 10000 }) }
  peers () { return this.call('swarm/peers') }
}

export function parseJsonLines (text) {
  const lines = text.split('\n').filter((l) => l.trim())
  if (lines.length === 0) return {}
  if (lines.length === 1) return JSON.parse(lines[0])
  return lines.map((l) => JSON.parse(l))
}
