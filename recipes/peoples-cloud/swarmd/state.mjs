// What a node remembers across reboots (on /data): the deployments it holds, every
// deployment it has heard of, and the unpinned ones (so a node that was away when a
// deployment was removed drops its copy instead of spreading it again).
import { readFileSync, writeFileSync, renameSync, mkdirSync } from 'node:fs'
import path from 'node:path'

export class NodeState {
  constructor (directory) {
    this.file = path.join(directory, 'state.json')
    this.mine = new Map() // cid -> {cid, name, size, r}
    this.catalog = new Map()
    this.gone = new Set()
    mkdirSync(directory, { recursive: true })
    try {
      const data = JSON.parse(readFileSync(this.file, 'utf8'))
      for (const d of data.mine || []) this.mine.set(d.cid, d)
      for (const d of data.catalog || []) this.catalog.set(d.cid, d)
      for (const cid of data.gone || []) this.gone.add(cid)
    } catch {}
  }

  used () {
    let total = 0
    for (const d of this.mine.values()) total += d.size
    return total
  }

  hold (deployment) {
    this.mine.set(deployment.cid, deployment)
    this.catalog.set(deployment.cid, deployment)
    this.gone.delete(deployment.cid)
    this.save()
  }

  remove (cid) {
    this.mine.delete(cid)
    this.catalog.delete(cid)
    this.gone.add(cid)
    this.save()
  }

  save () {
    const tmp = `${this.file}.tmp`
    writeFileSync(tmp, JSON.stringify({
      mine: [...this.mine.values()],
      catalog: [...this.catalog.values()],
      gone: [...this.gone]
    }))
    renameSync(tmp, this.file)
  }
}
