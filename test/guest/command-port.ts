/**
 * The test guest's command port (its ttyS1, a unix socket QEMU serves): lines such as
 * `grow 64`, `shrink 150` or `balloon-off` that the guest's program carries out.
 */
import net from 'node:net'

export class CommandPort {
  private sock: net.Socket | null = null
  constructor (readonly file: string) {}
  async send (line: string): Promise<void> {
    if (this.sock === null) {
      const s = net.connect(this.file)
      await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
      s.on('error', () => {})
      this.sock = s
    }
    this.sock.write(line + '\n')
  }

  close (): void { this.sock?.destroy() }
}
