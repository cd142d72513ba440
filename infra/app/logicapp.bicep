// The sample approval workflow (samples/logic-apps/workflow.json, loaded as it is) as a Consumption Logic
// App with a system-assigned identity, which `python -m registrations.setup --broker <its principal id>`
// gives Registrations.Broker (it asks on the requester's behalf), and its Office 365 connection (authorize it
// once in the portal: API connections). The function key reaches the workflow as its secure parameter, never
// as an output. Its Request trigger takes no SAS caller: only a bearer token from this tenant for the API's own
// registration (a person holding one of its app roles: the API's service principal requires assignment) starts
// a run, and the workflow reads the requester from that token.
param location string
param tags object
param resourceToken string
param functionAppName string
param apiAudience string
@description('API_CLIENT_ID: the audience (aud) of the v2 tokens the trigger accepts.')
param apiClientId string
param approverEmail string

var workflow = loadJsonContent('../../samples/logic-apps/workflow.json')

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource office365 'Microsoft.Web/connections@2016-06-01' = {
  name: 'office365-${resourceToken}'
  location: location
  tags: tags
  properties: {
    displayName: 'Office 365 (approvals)'
    api: {
      id: subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'office365')
    }
  }
}

resource logicApp 'Microsoft.Logic/workflows@2019-05-01' = {
  name: 'logic-${resourceToken}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    state: 'Enabled'
    accessControl: {
      triggers: {
        openAuthenticationPolicies: {
          policies: {
            requesters: {
              type: 'AAD'
              claims: [
                { name: 'iss', value: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0' }
                { name: 'aud', value: apiClientId }
              ]
            }
          }
        }
      }
    }
    definition: workflow.definition
    parameters: {
      '$connections': {
        value: {
          office365: {
            connectionId: office365.id
            connectionName: office365.name
            id: office365.properties.api.id
          }
        }
      }
      apiBase: { value: 'https://${functionApp.properties.defaultHostName}/api' }
      apiAudience: { value: apiAudience }
      approverEmail: { value: approverEmail }
      functionKey: { value: listKeys('${functionApp.id}/host/default', '2024-04-01').functionKeys.default }
    }
  }
}

output name string = logicApp.name
output principalId string = logicApp.identity.principalId
