import Foundation
import Auth
import Config
import Proxy
import Server

struct ReadyStatus: Encodable {
    var status: String
    var liveWorkers: Int
}
