// A minimal solver of ALTCHA's proof-of-work protocol (PoW v2, PBKDF2/SHA-256), for drops
// that ask for a challenge (`requireChallenge`). The ALTCHA widget does the same; this page
// vendors no third-party code, so it solves with the browser's own WebCrypto.
//
// solveAltcha(challenge) → the `X-Altcha` value: base64 of {challenge, solution}.
(() => {
  'use strict';

  const hexToBytes = (hex) => new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)));
  const bytesToHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

  async function derive(nonce, salt, counter, params) {
    // password = nonce bytes ‖ counter as 4 big-endian bytes
    const password = new Uint8Array(nonce.length + 4);
    password.set(nonce);
    new DataView(password.buffer).setUint32(nonce.length, counter, false);
    const key = await crypto.subtle.importKey('raw', password, 'PBKDF2', false, ['deriveBits']);
    const bits = await crypto.subtle.deriveBits(
      { name: 'PBKDF2', hash: 'SHA-256', salt, iterations: params.cost },
      key,
      params.keyLength * 8,
    );
    return bytesToHex(new Uint8Array(bits));
  }

  async function solveAltcha(challenge, { maxTries = 1_000_000 } = {}) {
    const params = challenge.parameters;
    if (params.algorithm !== 'PBKDF2/SHA-256') throw new Error(`cannot solve ${params.algorithm}`);
    const nonce = hexToBytes(params.nonce);
    const salt = hexToBytes(params.salt);
    const started = performance.now();
    for (let counter = 0; counter < maxTries; counter += 1) {
      const derivedKey = await derive(nonce, salt, counter, params);
      if (derivedKey.startsWith(params.keyPrefix)) {
        const solution = { counter, derivedKey, time: Math.round(performance.now() - started) };
        return btoa(JSON.stringify({ challenge, solution }));
      }
    }
    throw new Error('the challenge could not be solved');
  }

  window.solveAltcha = solveAltcha;
})();
