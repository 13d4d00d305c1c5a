import Crypto
import Foundation

/// An AES-256-CTR keystream in 64 KiB chunks: DP-SGD's randomness (`SecureRandomness`) and the
/// secure-aggregation masks (`MaskPRG`) both draw from it. `Crypto` exposes no raw CTR mode, so
/// chunk k is AES-256-GCM's ciphertext of zeros under nonce `domain ‖ k` (GCM's encryption *is*
/// CTR mode, counter starting at 2 after the 96-bit nonce); the tag is discarded. The 4-byte
/// `domain` keeps the users' streams apart even under one key.
public enum AESKeystream {
    public static let chunkBytes = 65_536
    private static let zeros = Data(count: chunkBytes)

    /// Writes the first `out.count` (at most 64 KiB) bytes of chunk `chunk` into `out`.
    public static func write(key: SymmetricKey, domain: [UInt8], chunk: UInt64, into out: UnsafeMutableRawBufferPointer) {
        precondition(domain.count == 4 && out.count <= chunkBytes, "a 4-byte domain and at most one chunk")
        var nonce = domain
        withUnsafeBytes(of: chunk.bigEndian) { nonce.append(contentsOf: $0) }
        do {
            let box = try AES.GCM.seal(zeros.prefix(out.count), using: key, nonce: try AES.GCM.Nonce(data: nonce))
            box.ciphertext.withUnsafeBytes { src in out.copyMemory(from: src) }
        } catch {
            // Only reachable with a wrong key or nonce size, which the types above rule out.
            preconditionFailure("AES-GCM keystream failed: \(error)")
        }
    }
}
