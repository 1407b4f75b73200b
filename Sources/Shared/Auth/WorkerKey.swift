import Crypto
import Foundation
import Config

/// Per-worker credentials: each worker's HS256 secret is derived from the cluster's worker
/// key and the worker's name with HKDF-SHA256.
///
/// Why derived secrets rather than a key pair per worker: the hub needs no list of public
/// keys to keep in step with its workers (one key derives them all, and rotating it rotates
/// them all), a worker's entry in the cluster file stays the same, and HS256 is what every
/// other cluster token already uses. What matters holds either way: the hub holds the
/// cluster key; a worker holds only its own secret, which signs for its own name (the hub
/// verifies a worker's reports with that worker's key, and the worker accepts hub tokens
/// only for itself as audience), so a stolen worker credential opens nothing else.
/// `caravan-hub worker-secret --name NAME` prints a worker's secret.
public enum WorkerKey {
    static let salt = Data("caravan worker credential v1".utf8)

    /// The key join tokens are signed with (``TokenRole/join``): derived apart from every
    /// worker's credential, so no worker credential can mint one.
    public static func joinKey(clusterKey: Secret) -> Secret {
        derive(clusterKey: clusterKey, info: "caravan join tokens")
    }

    /// The secret of worker `name` under `clusterKey` (64 hex digits).
    public static func derive(clusterKey: Secret, worker name: String) -> Secret {
        derive(clusterKey: clusterKey, info: "worker:" + name)
    }

    private static func derive(clusterKey: Secret, info: String) -> Secret {
        let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: Data(clusterKey.value.utf8)),
                                         salt: salt, info: Data(info.utf8), outputByteCount: 32)
        return Secret(key.withUnsafeBytes { bytes in bytes.map { String(format: "%02x", $0) }.joined() })
    }
}
