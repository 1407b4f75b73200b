import Foundation

/// The OpenAI error envelope's `type` and `code` of a body, or nil when the body is not one
/// (`{"error":{"message","type","code"}}`).
package func envelope(_ body: String) -> (type: String?, code: String?)? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
        let error = object["error"] as? [String: Any], error["message"] is String
    else { return nil }
    return (error["type"] as? String, error["code"] as? String)
}
