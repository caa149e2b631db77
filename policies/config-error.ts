/**
 * The one error every configuration check throws (policies, the core's sections, the agent's
 * file, the credentials): the message for people, the field path for programs. It lives in
 * policies/, the lowest layer, so that the policies, the core and the edge all throw the same
 * class (the core and the edge re-export it).
 */
export class ConfigError extends Error {
  static override name = 'ConfigError'
  /** Branch on `code`, never on the message. */
  readonly code = 'CONFIG_INVALID'
  /**
   * The field at fault, as a path from the root of what was checked: 'migration.onStallByVm.web1',
   * 'vips[0].address', 'probeTimeoutTicks' (relative: the caller that knows the section prefixes
   * it, see withPrefix). '' when no single field is at fault (an unreadable file).
   */
  readonly path: string
  constructor (message: string, path = '') {
    super(message)
    this.name = 'ConfigError'
    this.path = path
  }

  /** The same error with `prefix` in front of its path (its message unchanged unless given). */
  withPrefix (prefix: string, message = this.message): ConfigError {
    return new ConfigError(message, this.path === '' ? prefix : this.path.startsWith('[') ? `${prefix}${this.path}` : `${prefix}.${this.path}`)
  }
}
