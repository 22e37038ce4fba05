// Every resource of the insights API, in one resource group (called from main.bicep).
//
// Two storage accounts, both with shared keys off:
// - the app's own (st<token>): the deployment package and the Functions host's state
//   (AzureWebJobsStorage: the purge timer's schedule and lock). Nothing in it outlives a redeploy,
//   so it is LRS.
// - the insights data (stdata<token>): the table the API reads and the ingestion API writes.
//   Separate so its redundancy (insightsStorageSku), its lifetime and its role assignments are its
//   own: the deploying user gets data rights on the insights table and nothing on the app's
//   package or host state, and host traffic never counts against the data's request limits.

param location string
param tags object
param resourceToken string
param principalId string
param principalType string
param instanceMemoryMB int
param maximumInstanceCount int
param insightsStorageSku string
param insightsTableName string
@description('The AUTH_* app settings, by name.')
param auth object
param purgeSchedule string

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: tags
}

// ---- monitoring: Entra-only ingestion (local auth off); the app sends as its identity

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

// ---- the app's own storage: deployment package and host state

resource appStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource appBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: appStorage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: appBlobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---- the insights data

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stdata${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: insightsStorageSku
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource dataTables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: dataStorage
  name: 'default'
}

resource insightsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: dataTables
  name: insightsTableName
}

// ---- role assignments: exactly what each principal needs, each on the narrowest scope

// The deployment package and the host's AzureWebJobsStorage (the timer's blobs).
resource appStorageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appStorage.id, identity.id, roles.storageBlobDataOwner)
  scope: appStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Reads, and the ingestion API's writes, on the insights table only.
resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insightsTable.id, identity.id, roles.storageTableDataContributor)
  scope: insightsTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry to Application Insights with local auth off.
resource monitoringRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The deploying user: the data commands (load, export, migrate, ...) from a laptop.
resource userTableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(insightsTable.id, principalId, roles.storageTableDataContributor)
  scope: insightsTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: principalType
  }
}

// ---- the Function App: Flex Consumption, Python 3.13

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${appStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
  }

  // Every setting the code reads (shared/settings.py, host.json, the runtime library): the test
  // suite checks this list against the typed settings and local.settings.sample.json.
  resource appSettings 'config' = {
    name: 'appsettings'
    properties: union(auth, {
      // the Functions host's own storage, through the identity (no connection string, no key);
      // blobs only: the timer's schedule status and lock are all the host keeps
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identity.properties.clientId
      AzureWebJobsStorage__blobServiceUri: appStorage.properties.primaryEndpoints.blob
      APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
      // DefaultAzureCredential picks the user-assigned identity by this
      AZURE_CLIENT_ID: identity.properties.clientId
      INSIGHTS_STORAGE_ACCOUNT_URL: dataStorage.properties.primaryEndpoints.table
      INSIGHTS_TABLE_NAME: insightsTableName
      PURGE_SCHEDULE: purgeSchedule
      PYTHON_ENABLE_OPENTELEMETRY: 'true'
      PYDANTIC_DISABLE_PLUGINS: '__all__'
      // request limits and storage timeouts: the code's defaults, written out so an operator
      // sees and tunes them in one place
      MAX_REQUEST_BYTES: '4194304'
      INGEST_MAX_DOCUMENTS: '1000'
      REQUEST_BUDGET_SECONDS: '4'
      STORAGE_CONNECT_TIMEOUT_SECONDS: '1'
      STORAGE_READ_TIMEOUT_SECONDS: '1.5'
      STORAGE_RETRIES: '1'
      STORAGE_MAX_CONCURRENT_READS: '8'
      THROTTLE_REQUESTS_PER_MINUTE: '1200'
      // how long a contact's or tenant's delete waits for writes already in flight (docs/write-rules.md)
      WRITE_SETTLE_SECONDS: '30'
      // how long tombstones and delete watermarks are kept before housekeeping collects them
      TOMBSTONE_GRACE_DAYS: '10'
    })
    dependsOn: [
      // the host starts with these settings: its storage and telemetry rights must exist first
      appStorageRole
      tableRole
      monitoringRole
    ]
  }
}

// Basic (publishing-password) auth off for FTP and the deployment endpoint: azd and
// `func azure functionapp publish` sign in with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output functionAppName string = functionApp.name
output functionAppUri string = 'https://${functionApp.properties.defaultHostName}'
output insightsTableEndpoint string = dataStorage.properties.primaryEndpoints.table
output identityClientId string = identity.properties.clientId
output applicationInsightsName string = appInsights.name
