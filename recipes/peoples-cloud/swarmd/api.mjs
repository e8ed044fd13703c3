// The swarm API users (and the client) talk to. Reads are open; adding and removing content
// needs the swarm's user token (Authorization: Bearer TOKEN). Content is only ever served
// by the IPFS gateway, which is read-only.
import http from 'node:http'
import { timingSafeEqual, createHash } from 'node:crypto'

const CID_RE = /^[A-Za-z0-9]{32,128}$/

function send (res, status, body) {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

function digest (text) {
  return createHash('sha256').update(text).digest()
}

export function authorised (header, token) {
  if (!token) return false
  const match = /^Bearer (.+)$/.exec(header || '')
  return match !== null && timingSafeEqual(digest(match[1]), digest(token))
}

export function startApi (daemon, { port, token }) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://node')
    try {
      if (req.method === 'GET' && url.pathname === '/v1/status') return send(res, 200, await daemon.status())
      if (req.method === 'GET' && url.pathname === '/v1/members') return send(res, 200, await daemon.memberList())
      if (req.method === 'GET' && url.pathname === '/v1/deployments') return send(res, 200, await daemon.deployments())
      const write = (req.method === 'POST' && url.pathname === '/v1/deployments') ||
        (req.method === 'DELETE' && url.pathname.startsWith('/v1/deployments/'))
      if (!write) {
        req.resume()
        return send(res, url.pathname.startsWith('/v1/') ? 405 : 404, { error: 'no such endpoint' })
      }
      if (!token) {
        req.resume()
        return send(res, 403, { error: 'this node has no user token set: it takes no writes' })
      }
      if (!authorised(req.headers.authorization, token)) {
        req.resume()
        return send(res, 401, { error: 'the swarm user token is missing or wrong' })
      }
      if (req.method === 'POST') {
        const name = (url.searchParams.get('name') || '').slice(0, 200)
        const type = req.headers['content-type'] || ''
        if (!type.startsWith('multipart/form-data')) {
          req.resume()
          return send(res, 400, { error: 'send the content as multipart/form-data' })
        }
        const result = await daemon.deploy(req, type, name)
        return send(res, result.status, result.body)
      }
      const cid = decodeURIComponent(url.pathname.slice('/v1/deployments/'.length))
      if (!CID_RE.test(cid)) return send(res, 400, { error: 'not a CID' })
      return send(res, 200, await daemon.unpinEverywhere(cid))
    } catch (err) {
      return send(res, 502, { error: String(err.message || err) })
    }
  })
  server.listen(port, '0.0.0.0')
  return server
}
